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

from bench import limits
from bench.attacks import ATTACKS, AttackError, derive_seed, make_attack
from bench.data import DataSplit
from bench.engine.cell import evaluate_cell, tidy
from bench.engine.model_checks import check_logits, gradient_logits_exact
from bench.engine.models import resolve_device
from bench.minimal_eps import add_minimal_eps
from bench.registry import RegistryError
from bench.tracking.evaluation import log_evaluation
from bench.types import Bounds
from model_zoo.external import ExternalModelError, check_trusted


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
    _check_options(
        model=model,
        bounds=bounds,
        seed=seed,
        batch_size=batch_size,
        device=device,
        flags={"minimal_eps": minimal_eps, "allow_probabilities": allow_probabilities, "track": track},
        names={"model_name": model_name, "experiment": experiment},
    )
    data = _data(x, y, Bounds(*bounds))
    grid = _epsilons(epsilons)
    the_attack = _attack(attack, params, minimal_eps=minimal_eps)
    try:
        where = resolve_device(device)
    except (ValueError, RuntimeError) as exc:
        raise EvaluateError(f"device: {exc}") from None
    model = model.to(where).eval()
    first = data.x[: min(len(data), batch_size)].to(where)
    logits = _first_logits(model, first)
    classes = int(logits.shape[1])
    if int(data.y.max()) >= classes or int(data.y.min()) < 0:
        raise EvaluateError(
            f"y: labels from {int(data.y.min())} to {int(data.y.max())}, but the model returns {classes} logits "
            f"(allowed: 0 to {classes - 1})"
        )
    check_logits(logits, model=model_name, allow_probabilities=allow_probabilities)
    cell_seed = derive_seed(seed, model_name, attack)
    try:
        return _evaluate(
            model,
            the_attack,
            data,
            grid,
            where=where,
            first=first,
            logits=logits,
            seed=seed,
            cell_seed=cell_seed,
            batch_size=batch_size,
            minimal_eps=minimal_eps,
            model_name=model_name,
            attack=attack,
            track=track,
            experiment=experiment,
        )
    except AttackError as exc:  # what only the data and model reveal (e.g. DLR on 3 classes): the user's input
        raise EvaluateError(f"attack {attack!r} on this model and data: {exc}") from None


def _evaluate(
    model: nn.Module,
    the_attack: Any,
    data: DataSplit,
    grid: tuple[float, ...],
    *,
    where: torch.device,
    first: torch.Tensor,
    logits: torch.Tensor,
    seed: int,
    cell_seed: int,
    batch_size: int,
    minimal_eps: bool,
    model_name: str,
    attack: str,
    track: bool,
    experiment: str,
) -> pd.DataFrame:
    """The cell of :func:`evaluate`, its arguments checked."""
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


def _check_options(
    *,
    model: Any,
    bounds: Any,
    seed: Any,
    batch_size: Any,
    device: Any,
    flags: dict[str, Any],
    names: dict[str, Any],
) -> None:
    """The keyword arguments' types and ranges, as a suite's fields are checked (one line naming the argument)."""
    if not isinstance(model, nn.Module):
        raise EvaluateError(f"model: must be a torch.nn.Module returning logits, got {type(model).__name__}")
    if not _integer(batch_size) or not 1 <= batch_size <= limits.BATCH_SIZE:
        raise EvaluateError(f"batch_size: must be an integer from 1 to {limits.BATCH_SIZE:,}, got {batch_size!r}")
    if not _integer(seed) or not -(2**63) <= seed < 2**63:
        raise EvaluateError(f"seed: must be a 64-bit integer, got {seed!r}")
    if (
        not isinstance(bounds, tuple | list | np.ndarray)
        or len(bounds) != 2
        or not all(_number(b) for b in bounds)
        or not bounds[0] < bounds[1]
    ):
        raise EvaluateError(f"bounds: must be (low, high) finite numbers with low < high, got {bounds!r}")
    if not isinstance(device, str):
        raise EvaluateError(f"device: must be a string (auto, cpu, cuda, cuda:N), got {device!r}")
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise EvaluateError(f"{name}: must be True or False, got {value!r}")
    for name, value in names.items():
        if not isinstance(value, str) or not 0 < len(value) <= 250:
            raise EvaluateError(f"{name}: must be a non-empty string of at most 250 characters, got {value!r}")


def _integer(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, int | float | np.number) and not isinstance(value, bool) and bool(np.isfinite(value))


def _attack(name: Any, params: dict[str, Any], *, minimal_eps: bool) -> Any:
    """The attack from a registered (or ``art:``) name, or a ``module:Class`` plugin from a trusted module (as in
    a suite: ``bench``, ``model_zoo`` and ``$BENCH_TRUSTED_MODULES``; checked before anything is imported)."""
    if not isinstance(name, str):
        raise EvaluateError(f"attack: must be an attack name, got {type(name).__name__}")
    if name not in ATTACKS and ATTACKS.namespace_of(name) is None:
        if ":" not in name:
            raise EvaluateError(
                f"attack: {name!r} is not a registered attack (allowed: {', '.join(ATTACKS.names())}, "
                "art:<ClassName>, or a trusted module:Class)"
            )
        try:
            check_trusted(name, trust=("bench",), what="attack plugin")
        except ExternalModelError as exc:
            raise EvaluateError(f"attack: {exc}") from None
    elif minimal_eps and ATTACKS.abilities(name).minimal_eps is None:
        allowed = ", ".join(ATTACKS.declaring(lambda abilities: abilities.minimal_eps is not None))
        raise EvaluateError(f"minimal_eps: not available for attack {name!r} (allowed: {allowed})")
    try:
        return make_attack(name, **params)
    except (AttackError, RegistryError, TypeError, ValueError) as exc:
        raise EvaluateError(f"params: {exc}") from None


def _first_logits(model: nn.Module, first: torch.Tensor) -> torch.Tensor:
    """The model's outputs on the first batch, checked to be logits: floating, ``(N, classes)``, one row per input."""
    try:
        with torch.no_grad():
            logits = model(first)
    except Exception as exc:
        raise EvaluateError(
            f"model: failed on the first batch of shape {tuple(first.shape)}: {type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(logits, torch.Tensor):
        raise EvaluateError(f"model: must return a tensor of logits, got {type(logits).__name__}")
    if logits.ndim != 2:
        raise EvaluateError(f"model: must return logits (N, classes), got shape {tuple(logits.shape)}")
    if logits.shape[0] != first.shape[0]:
        raise EvaluateError(f"model: returned {logits.shape[0]} rows of logits for {first.shape[0]} inputs")
    if not logits.dtype.is_floating_point:
        raise EvaluateError(f"model: must return floating-point logits, got {logits.dtype}")
    if logits.shape[1] < 2:
        raise EvaluateError(f"model: must return at least 2 logits per input, got {logits.shape[1]}")
    return logits


def _data(x: torch.Tensor | np.ndarray, y: Any, bounds: Bounds) -> DataSplit:
    try:
        xt = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).detach().cpu()
    except (TypeError, ValueError, RuntimeError) as exc:
        raise EvaluateError(
            f"x: must be a numeric array or tensor (N, C, H, W), got {type(x).__name__} ({exc})"
        ) from None
    if xt.dtype.is_complex or xt.dtype == torch.bool:
        raise EvaluateError(f"x: must hold real numbers, got {xt.dtype}")
    xt = xt.float()
    try:
        yt = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y).detach().cpu()
    except (TypeError, ValueError, RuntimeError) as exc:
        raise EvaluateError(f"y: must be integer labels, got {type(y).__name__} ({exc})") from None
    if xt.ndim != 4:
        raise EvaluateError(f"x: must be (N, C, H, W), got shape {tuple(xt.shape)} (add a channel axis: x[:, None])")
    if 0 in xt.shape:
        raise EvaluateError(f"x: every dimension must be at least 1, got shape {tuple(xt.shape)}")
    if len(xt) > limits.FLAG_SAMPLES:
        raise EvaluateError(f"x: {len(xt):,} samples, over the cap of {limits.FLAG_SAMPLES:,}")
    if yt.ndim != 1 or len(yt) != len(xt) or yt.dtype.is_floating_point or yt.dtype == torch.bool:
        raise EvaluateError(f"y: must be {len(xt)} integer labels, got shape {tuple(yt.shape)} of {yt.dtype}")
    if not bool(torch.isfinite(xt).all()):
        raise EvaluateError("x: holds NaN or infinite values")
    low, high = float(xt.min()), float(xt.max())
    if low < bounds.low or high > bounds.high:
        raise EvaluateError(
            f"x: values in [{low:g}, {high:g}] outside bounds [{bounds.low:g}, {bounds.high:g}] "
            "(pass pixel-space inputs and put normalization inside the model, or set bounds=...)"
        )
    classes = int(yt.max()) + 1
    return DataSplit("user", "given", xt, yt.long(), bounds, tuple(str(c) for c in range(classes)), "bench.evaluate")


def _epsilons(epsilons: Sequence[float]) -> tuple[float, ...]:
    if isinstance(epsilons, str | bytes) or not isinstance(epsilons, Sequence | np.ndarray | torch.Tensor):
        raise EvaluateError(f"epsilons: must be a list of numbers, got {type(epsilons).__name__}")
    if len(epsilons) > limits.EPSILONS:
        raise EvaluateError(f"epsilons: {len(epsilons):,} values, over the cap of {limits.EPSILONS:,}")
    if any(isinstance(e, bool) for e in epsilons):
        raise EvaluateError(f"epsilons: must be numbers, got {list(epsilons)!r}")
    try:
        grid = sorted({float(e) for e in epsilons})
    except (TypeError, ValueError) as exc:
        raise EvaluateError(f"epsilons: must be numbers, got {list(epsilons)!r}") from exc
    if not grid or grid[0] < 0 or not all(np.isfinite(grid)):
        raise EvaluateError(f"epsilons: must be one or more finite numbers >= 0, got {list(epsilons)!r}")
    return tuple(grid)
