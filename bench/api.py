"""The Python API: evaluate your own model in a notebook, foolbox/torchattacks style, without a suite file.

``bench.evaluate(model, x, y, attack="pgd", epsilons=[0, 0.1, 0.3], steps=20)`` runs one
attack over an eps sweep through the same code path as a suite cell
(:func:`bench.engine.cell.evaluate_cell` and :func:`~bench.engine.cell.tidy`) and returns the same
per-eps table: a :class:`pandas.DataFrame` with the columns of ``results.csv``
(:data:`bench.rundir.RESULT_COLUMNS`), one row per eps. With ``track=True`` the table is
also logged to MLflow as one run (through :mod:`bench.tracking`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from bench.attacks import derive_seed, make_attack
from bench.data import DataSplit
from bench.engine.cell import evaluate_cell, tidy
from bench.engine.model_checks import check_logits, gradient_logits_exact
from bench.engine.models import resolve_device
from bench.minimal_eps import add_minimal_eps
from bench.tracking.evaluation import log_evaluation
from bench.types import Bounds


class EvaluateError(ValueError):
    """Bad arguments to :func:`evaluate` (the message names the argument and what is allowed)."""


def evaluate(
    model: nn.Module,
    x: torch.Tensor | np.ndarray,
    y: torch.Tensor | np.ndarray | Sequence[int],
    attack: str = "pgd",
    epsilons: Sequence[float] = (0.0, 0.05, 0.1, 0.2, 0.3),
    *,
    bounds: tuple[float, float] = (0.0, 1.0),
    seed: int = 0,
    batch_size: int = 256,
    device: str = "auto",
    minimal_eps: bool = False,
    model_name: str = "model",
    allow_probabilities: bool = False,
    track: bool = False,
    experiment: str = "bench-evaluate",
    **params: Any,
) -> pd.DataFrame:
    """Robust accuracy of ``model`` on ``(x, y)`` under ``attack`` at each eps, as a per-eps table.

    Args:
        model: a :class:`torch.nn.Module` returning logits (put in eval mode here).
        x: inputs ``(N, C, H, W)`` in pixel space, values within ``bounds`` (tensor or array).
        y: integer labels ``(N,)``.
        attack: a registered attack name (``bench ls`` lists them), e.g. ``"fgsm"``, ``"pgd"``, ``"bim"``.
        epsilons: budgets in pixel units of the attack's norm; sorted, duplicates dropped.
        bounds: the pixel range ``(low, high)`` the attack clips to.
        seed: seeds every random draw (same arguments, same numbers).
        batch_size: samples per model call.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
        minimal_eps: also bisect each sample's minimal eps (attacks that declare it: fgsm, bim, pgd);
            adds the ``median_min_eps`` column.
        model_name: the ``model`` column (and the MLflow run name).
        allow_probabilities: run even when the outputs look like probabilities (with a warning).
        track: also log the table to MLflow (``MLFLOW_TRACKING_URI``, else MLflow's default store).
        experiment: the MLflow experiment when ``track`` is true.
        **params: the attack's hyperparameters (``steps=20``, ``norm="l2"``, ``targeted=True``, ...).

    Returns:
        One row per eps with the columns of ``results.csv``: ``robust_accuracy`` (cumulative: a
        sample fooled at a smaller eps stays fooled) with its Wilson 95% interval ``ci_low``/``ci_high``,
        ``attack_success_rate``, ``clean_accuracy``, perturbation norms, ``grad_evals``, ``seconds``.
        With ``track``, ``attrs["mlflow_run_id"]`` holds the MLflow run's id.
    """
    data = _data(x, y, Bounds(*bounds))
    grid = _epsilons(epsilons)
    if batch_size < 1:
        raise EvaluateError(f"batch_size: must be >= 1, got {batch_size}")
    the_attack = make_attack(attack, **params)
    where = resolve_device(device)
    model = model.to(where).eval()
    first = data.x[: min(len(data), batch_size)].to(where)
    with torch.no_grad():
        logits = model(first)
    if logits.ndim != 2:
        raise EvaluateError(f"model: must return logits (N, classes), got shape {tuple(logits.shape)}")
    check_logits(logits, model=model_name, allow_probabilities=allow_probabilities)
    cell_seed = derive_seed(seed, model_name, attack)
    arrays, _ = evaluate_cell(
        model,
        the_attack,
        data,
        grid,
        seed=cell_seed,
        device=where,
        batch_size=batch_size,
        gradient_logits=the_attack.uses_gradients and gradient_logits_exact(model, first, logits),
    )
    meta = {
        "suite": "bench.evaluate",
        "dataset": data.name,
        "split": data.split,
        "model": model_name,
        "attack": attack,
        "attack_name": attack,
        "attack_params": json.dumps(the_attack.params(), sort_keys=True, default=str),
        "norm": the_attack.norm.value,
        "targeted": the_attack.targeted,
        "seed": seed,
        "device": str(where),
    }
    rows, samples = tidy(arrays, data=data, epsilons=grid, attack=the_attack, meta=meta)
    if minimal_eps:
        rows, samples, _ = add_minimal_eps(
            rows,
            samples,
            model=model,
            attack=the_attack,
            data=data,
            epsilons=grid,
            seed=cell_seed,
            device=where,
            batch_size=batch_size,
            targets=arrays["target"] if the_attack.targeted else None,
        )
    rows = rows.reset_index(drop=True)
    if track:
        rows.attrs["mlflow_run_id"] = log_evaluation(rows, experiment=experiment, run_name=f"{model_name} · {attack}")
    return rows


def _data(x: torch.Tensor | np.ndarray, y: Any, bounds: Bounds) -> DataSplit:
    xt = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).detach().cpu().float()
    yt = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y).detach().cpu()
    if xt.ndim != 4:
        raise EvaluateError(f"x: must be (N, C, H, W), got shape {tuple(xt.shape)} (add a channel axis: x[:, None])")
    if yt.ndim != 1 or len(yt) != len(xt) or yt.dtype.is_floating_point or yt.dtype == torch.bool:
        raise EvaluateError(f"y: must be {len(xt)} integer labels, got shape {tuple(yt.shape)} of {yt.dtype}")
    if len(xt) == 0:
        raise EvaluateError("x: no samples")
    low, high = float(xt.min()), float(xt.max())
    if low < bounds.low or high > bounds.high:
        raise EvaluateError(
            f"x: values in [{low:g}, {high:g}] outside bounds [{bounds.low:g}, {bounds.high:g}] "
            "(pass pixel-space inputs and put normalization inside the model, or set bounds=...)"
        )
    classes = int(yt.max()) + 1
    return DataSplit("user", "given", xt, yt.long(), bounds, tuple(str(c) for c in range(classes)), "bench.evaluate")


def _epsilons(epsilons: Sequence[float]) -> tuple[float, ...]:
    try:
        grid = sorted({float(e) for e in epsilons})
    except (TypeError, ValueError) as exc:
        raise EvaluateError(f"epsilons: must be numbers, got {list(epsilons)!r}") from exc
    if not grid or grid[0] < 0 or not all(np.isfinite(grid)):
        raise EvaluateError(f"epsilons: must be one or more finite numbers >= 0, got {list(epsilons)!r}")
    return tuple(grid)
