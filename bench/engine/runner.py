"""Executes a suite: prepares data and models, runs cells through joblib, writes the run directory.

Phases:

1. resolve the device, load the data split, train or load every model (in this
   process, so parallel workers never race on the checkpoint cache), record
   clean accuracy and check that outputs are logits;
2. run each (model, attack) cell through ``joblib.Parallel``; a cell evaluates
   the whole epsilon sweep batch by batch and writes ``cells/<id>/``
   atomically, so a finished cell is never lost;
3. gather the rows into ``results.csv``/``results.parquet`` and per-sample
   flags into ``samples.parquet``, write figures and the manifest, print a
   summary, and mirror the run directory into MLflow.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import math
import os
import platform
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from bench import stats
from bench.attacks import Attack, AttackContext, make_attack, perturbation_norms
from bench.attacks.base import derive_seed
from bench.data import DataSplit, load_dataset
from bench.rundir import (
    OPTIONAL_RESULT_COLUMNS,
    OPTIONAL_SAMPLE_COLUMNS,
    RESULT_COLUMNS,
    SAMPLE_COLUMNS,
    RunDir,
    atomic_write_npz,
    atomic_write_parquet,
    atomic_write_text,
    select_columns,
    write_json,
)
from bench.suite import Cell, ModelSpec, Suite, check_n_jobs, dump_yaml, expand


class RunError(RuntimeError):
    """A suite that cannot run as written (the message says what to change)."""


class TrackingWarning(UserWarning):
    """MLflow mirroring failed; the run directory is complete and ``bench sync`` can retry."""


class ModelOutputError(RunError):
    """A model whose outputs are not usable logits."""


def resolve_device(requested: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise RunError("device: 'cuda' was requested but no CUDA device is available (use 'auto' or 'cpu')")
    try:
        return torch.device(requested)
    except RuntimeError:
        raise RunError(f"device: {requested!r} is not a device (allowed: auto, cpu, cuda, cuda:N)") from None


def check_logits(logits: torch.Tensor, *, model: str, allow_probabilities: bool) -> list[str]:
    """Refuse (or warn about) outputs that are not logits; returns the warnings issued.

    Probabilities (rows in [0, 1] summing to 1) and log-probabilities (rows
    whose logsumexp is 0) make cross-entropy gradients wrong or vanishing,
    which silently weakens every gradient attack (AutoAttack's first check).
    """
    if not bool(torch.isfinite(logits).all()):
        raise ModelOutputError(
            f"model {model!r} returned NaN or infinite outputs on clean inputs (it must return finite logits)"
        )
    problems = []
    rows = logits.double()
    if bool(((rows >= 0) & (rows <= 1)).all()) and bool(
        torch.allclose(rows.sum(1), torch.ones(len(rows), dtype=torch.double), atol=1e-3)
    ):
        problems.append(
            f"model {model!r} outputs look like probabilities (rows in [0, 1] summing to 1); attacks need logits"
        )
    elif bool((rows <= 0).all()) and bool(
        torch.allclose(torch.logsumexp(rows, 1), torch.zeros(len(rows), dtype=torch.double), atol=1e-3)
    ):
        problems.append(
            f"model {model!r} outputs look like log-probabilities (logsumexp of each row is 0); attacks need logits"
        )
    if problems and not allow_probabilities:
        raise ModelOutputError(problems[0] + " (set 'allow_probabilities: true' in the suite to run anyway)")
    for p in problems:
        warnings.warn(p, stacklevel=2)
    return problems


_MODE_DEPENDENT = (
    nn.modules.batchnorm._BatchNorm,
    nn.modules.dropout._DropoutNd,
    nn.modules.instancenorm._InstanceNorm,
)


def mode_info(model: nn.Module) -> dict[str, Any]:
    """What ``models.json`` records about train/eval mode.

    Every model is evaluated in eval mode whatever mode its factory or
    checkpoint left it in (``model_zoo.freeze``); ``mode_dependent_layers``
    lists the layers that switch changes (BatchNorm uses its running
    statistics, Dropout is off), so a reader knows the switch mattered.
    """
    return {
        "eval_mode": not model.training,
        "mode_dependent_layers": [
            f"{name} ({type(m).__name__})" for name, m in model.named_modules() if isinstance(m, _MODE_DEPENDENT)
        ],
    }


@torch.no_grad()
@torch.no_grad()
def check_deterministic(model: nn.Module, x: torch.Tensor, *, model_id: str, first: torch.Tensor | None = None) -> None:
    """Refuse a model whose logits differ between two identical calls in eval mode.

    ``x``: ``(N, C, H, W)`` pixels; ``first``: the logits of a call on ``x``
    already made (the clean pass), so the check costs one more call instead of
    two. Randomness left inside ``forward`` (say ``F.dropout(..., training=True)``
    or injected noise) survives ``eval()`` and makes robust accuracy a random
    variable: attacks then look stronger or weaker by chance (AutoAttack's
    randomness check).
    """
    second = model(x)
    first = model(x) if first is None else first.to(second.device)
    if not torch.allclose(first, second, rtol=1e-5, atol=1e-6):
        diff = float((first - second).abs().max())
        raise ModelOutputError(
            f"model {model_id!r} gives different outputs for two identical calls in eval mode (max difference "
            f"{diff:.3g}): remove randomness from forward (functional dropout with training=True, noise); "
            "the harness needs a deterministic model"
        )


# -- models ----------------------------------------------------------------------------------

_MODEL_CACHE: dict[tuple[Any, ...], nn.Module] = {}


@dataclass(frozen=True)
class ModelRef:
    """How any process gets the same trained model (picklable)."""

    id: str
    name: str
    dataset: str
    seed: int
    recipe: dict[str, Any]
    data_options: dict[str, Any]
    external: dict[str, Any] | None = None  # load_external() keyword arguments for factory/weights models

    def key(self) -> tuple[Any, ...]:
        return (
            self.name,
            self.dataset,
            self.seed,
            json.dumps(self.recipe, sort_keys=True),
            json.dumps(self.data_options, sort_keys=True),
            json.dumps(self.external, sort_keys=True),
        )

    def load(self, device: torch.device) -> nn.Module:
        from model_zoo import freeze, get_model
        from model_zoo.external import load_external

        cache_key = (*self.key(), str(device))
        if cache_key not in _MODEL_CACHE and self.external is not None:
            _MODEL_CACHE[cache_key] = freeze(load_external(self.name, **self.external), device)
        if cache_key not in _MODEL_CACHE:
            trained = get_model(
                self.name,
                self.dataset,
                seed=self.seed,
                device=device,
                recipe=self.recipe,
                data_options=self.data_options,
            )
            _MODEL_CACHE[cache_key] = trained.model
        return _MODEL_CACHE[cache_key]


def prepare_models(suite: Suite, data: DataSplit, device: torch.device) -> tuple[dict[str, ModelRef], dict[str, Any]]:
    """Train or load every model; record clean accuracy and output checks."""
    from model_zoo import get_model

    refs: dict[str, ModelRef] = {}
    info: dict[str, Any] = {}
    for spec in suite.models:
        if spec.external:
            refs[spec.id], info[spec.id] = _prepare_external(spec, suite, data, device)
            continue
        ref = ModelRef(
            spec.id, spec.name, suite.dataset.name, suite.seed, dict(spec.recipe), dict(suite.dataset.options)
        )
        start = time.perf_counter()
        trained = get_model(
            spec.name,
            suite.dataset.name,
            seed=suite.seed,
            device=device,
            recipe=ref.recipe,
            data_options=ref.data_options,
            progress_desc=f"train {spec.id}",
        )
        _MODEL_CACHE[(*ref.key(), str(device))] = trained.model
        refs[spec.id] = ref
        info[spec.id] = {
            "name": spec.name,
            "checkpoint": str(trained.checkpoint),
            "cache_key": trained.key,
            "trained_now": trained.trained_now,
            "recipe": trained.recipe.as_dict(),
            **model_checks(trained.model, spec.id, suite, data, device),
            "seconds": time.perf_counter() - start,
            "train": {k: v for k, v in trained.info.items() if k in ("train_accuracy", "train_loss", "seconds")},
        }
    return refs, info


def model_checks(
    model: nn.Module, model_id: str, suite: Suite, data: DataSplit, device: torch.device
) -> dict[str, Any]:
    """What every model must pass before an attack, zoo or external, and what ``models.json`` records of it.

    Logits of one row per class, not probabilities (unless the suite allows
    them), deterministic in eval mode; clean accuracy, mode-dependent layers and
    the zero-gradient fraction.
    """
    logits = _logits(model, data.x, device, suite.batch_size)
    if logits.ndim != 2 or logits.shape[1] != data.num_classes:
        raise ModelOutputError(
            f"model {model_id!r} returns outputs of shape {tuple(logits.shape[1:])} per sample; "
            f"data set {data.name!r} has {data.num_classes} classes"
        )
    warnings_issued = check_logits(logits, model=model_id, allow_probabilities=suite.allow_probabilities)
    first_batch = min(len(data), suite.batch_size)  # the clean pass's first call
    check_deterministic(model, data.x[:first_batch].to(device), model_id=model_id, first=logits[:first_batch])
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "clean_accuracy": float((logits.argmax(1) == data.y).float().mean()),
        "output_warnings": warnings_issued,
        **mode_info(model),
        "zero_gradient_fraction": zero_gradient_fraction(model, data, device, suite.batch_size),
    }


def _prepare_external(
    spec: ModelSpec, suite: Suite, data: DataSplit, device: torch.device
) -> tuple[ModelRef, dict[str, Any]]:
    """Build an external model, load its weights (shapes checked) and record clean accuracy."""
    from model_zoo.external import file_digest

    start = time.perf_counter()
    external = {
        "factory": spec.factory,
        "weights": spec.weights,
        "params": dict(spec.params),
        "layout": spec.weights_layout,
        "input_shape": list(data.input_shape),
        "num_classes": data.num_classes,
    }
    ref = ModelRef(spec.id, spec.name, suite.dataset.name, suite.seed, {}, dict(suite.dataset.options), external)
    model = ref.load(device)
    return ref, {
        "name": spec.name,
        "factory": spec.factory,
        "weights": spec.weights,
        "weights_sha256": file_digest(Path(spec.weights)) if spec.weights else None,
        "weights_layout": spec.weights_layout,
        "params": dict(spec.params),
        "trained_now": False,
        **model_checks(model, spec.id, suite, data, device),
        "seconds": time.perf_counter() - start,
    }


ZERO_GRADIENT_SAMPLES = 256
"""Samples the zero-gradient diagnostic looks at (the first of the evaluation data): near the report's
10% threshold the estimate's standard error is under 2 points, for a quarter of a full-data gradient
pass on the quickstart's 1,000 samples."""


def zero_gradient_fraction(
    model: nn.Module, data: DataSplit, device: torch.device, batch_size: int, *, n: int = ZERO_GRADIENT_SAMPLES
) -> float:
    """Fraction in [0, 1] of samples whose cross-entropy input gradient at the clean input is exactly zero.

    Computed once per model on the first ``n`` samples (it does not depend on
    the attack): many exact zeros (saturated softmax, quantizing or
    non-differentiable layers) leave gradient attacks nothing to follow, i.e.
    gradient masking; the report flags it.
    """
    data = data.subset(n)
    ctx = AttackContext()
    zero = 0
    for i in range(0, len(data), batch_size):
        grad, _ = ctx.loss_gradient(model, data.x[i : i + batch_size].to(device), data.y[i : i + batch_size].to(device))
        zero += int((grad.flatten(1) == 0).all(1).sum())
    return zero / max(1, len(data))


@torch.no_grad()
def _logits(model: nn.Module, x: torch.Tensor, device: torch.device, batch_size: int) -> torch.Tensor:
    return torch.cat([model(x[i : i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)])


# -- one cell ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CellTask:
    """Everything a worker needs to run one cell (picklable)."""

    cell: Cell
    model: ModelRef
    data: DataSplit
    suite_name: str
    seed: int
    device: str
    batch_size: int
    examples: int
    run_dir: str
    threads: int


@dataclass
class CellOutcome:
    cell_id: str
    rows: pd.DataFrame
    samples: pd.DataFrame
    seconds: float
    attack_seconds: float
    extras: dict[str, Any] = field(default_factory=dict)


POOL_BATCHES = 8
"""Model batches a pooled attack (BIM/PGD) gets at once: as early exit and the sweep drop fooled
samples, the survivors of eight batches still fill whole model calls (lenet: a 50-sample call costs
40% more per sample than a 500-sample one)."""

POOL_BYTES = 64 * 1024**2
"""Cap on the pixels of one pooled chunk (float32): a few such tensors are alive during an attack."""


def pool_size(attack: Attack, batch_size: int, input_shape: tuple[int, ...]) -> int:
    """Samples the runner hands ``attack`` per call: ``batch_size``, or up to ``POOL_BATCHES`` batches if pooled."""
    if not attack.pooled:
        return batch_size
    per_sample = 4 * math.prod(input_shape)
    return max(batch_size, min(POOL_BATCHES * batch_size, POOL_BYTES // max(1, per_sample)))


def evaluate_cell(
    model: nn.Module,
    attack: Attack,
    data: DataSplit,
    epsilons: tuple[float, ...],
    *,
    seed: int,
    device: torch.device,
    batch_size: int,
    examples: int = 0,
    target_class: int | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Run ``attack`` over ``epsilons`` on ``data`` batch by batch (pooled attacks: see :func:`pool_size`).

    ``target_class``: for targeted attacks, the class every sample is driven to
    (otherwise the attack's own ``target_mode`` picks targets).

    Returns per-sample arrays shaped ``(E, N)`` (``adv_pred``, ``linf``, ``l2``),
    ``(N,)`` (``clean_pred``, ``target``), per-eps costs ``(E,)`` and the first
    ``examples`` adversarial inputs ``(E, k, C, H, W)``, plus the attack's extras.
    """
    n, e = len(data), len(epsilons)
    adv_pred = np.zeros((e, n), dtype=np.int64)
    linf = np.zeros((e, n), dtype=np.float32)
    l2 = np.zeros((e, n), dtype=np.float32)
    clean_pred = np.zeros(n, dtype=np.int64)
    target = np.full(n, -1, dtype=np.int64)
    grad_evals = np.zeros(e, dtype=np.int64)
    seconds = np.zeros(e, dtype=np.float64)
    k = min(examples, n)
    example_adv = np.zeros((e, k, *data.input_shape), dtype=np.float32)
    extras: dict[str, Any] = {}
    chunk = pool_size(attack, batch_size, data.input_shape)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        xb = data.x[start:stop].to(device)
        yb = data.y[start:stop].to(device)
        ctx = AttackContext(seed=derive_seed(seed, start), batch_size=batch_size)
        clean_pred[start:stop] = ctx.logits(model, xb).argmax(1).cpu().numpy()
        tick = time.perf_counter()
        used = 0
        given = None if target_class is None else torch.full_like(yb, target_class)
        targets = attack.targets(model, xb, yb, target=given, ctx=ctx)
        if targets is not None:
            target[start:stop] = targets.cpu().numpy()
        for i, (eps, x_adv) in enumerate(
            attack.sweep(model, xb, yb, epsilons, target=targets, bounds=data.bounds, ctx=ctx)
        ):
            if eps != epsilons[i]:
                raise RunError(f"{attack!r} yielded eps {eps} where {epsilons[i]} was expected")
            adv_pred[i, start:stop] = ctx.logits(model, x_adv).argmax(1).cpu().numpy()
            norms = perturbation_norms(x_adv, xb)
            linf[i, start:stop] = norms["linf"].cpu().numpy()
            l2[i, start:stop] = norms["l2"].cpu().numpy()
            if start < k:
                take = min(k, stop) - start
                example_adv[i, start : start + take] = x_adv[:take].cpu().numpy()
            grad_evals[i] += ctx.grad_evals - used
            used = ctx.grad_evals
            now = time.perf_counter()
            seconds[i] += now - tick
            tick = now
        for key, value in ctx.extras.items():
            extras.setdefault(key, []).append(value)
    arrays = {
        "adv_pred": adv_pred,
        "linf": linf,
        "l2": l2,
        "clean_pred": clean_pred,
        "target": target,
        "grad_evals": grad_evals,
        "seconds": seconds,
        "example_x": data.x[:k].numpy(),
        "example_y": data.y[:k].numpy(),
        "example_adv": example_adv,
    }
    return arrays, extras


def tidy(
    arrays: dict[str, np.ndarray],
    *,
    data: DataSplit,
    epsilons: tuple[float, ...],
    attack: Attack,
    meta: dict[str, Any],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-eps result rows (RESULT_COLUMNS) and per-sample flags (SAMPLE_COLUMNS) of one cell."""
    y = data.y.numpy()
    clean_correct = arrays["clean_pred"] == y
    pointwise = (arrays["adv_pred"] == y[None, :]) & clean_correct[None, :]
    robust = stats.cumulative_robust(pointwise)
    if attack.targeted:
        hit = np.logical_or.accumulate(arrays["adv_pred"] == arrays["target"][None, :], axis=0)
        eligible = clean_correct & (arrays["target"] != y)
    rows = []
    for i, eps in enumerate(epsilons):
        n = len(y)
        robust_count = int(robust[i].sum())
        low, high = stats.wilson_interval(robust_count, n)
        if attack.targeted:
            success = float(hit[i][eligible].mean()) if eligible.any() else float("nan")
        else:
            success = stats.success_rate(clean_correct, ~robust[i])
        rows.append(
            {
                **meta,
                "n": n,
                "eps": float(eps),
                "clean_accuracy": float(clean_correct.mean()),
                "robust_accuracy": robust_count / n,
                "ci_low": low,
                "ci_high": high,
                "robust_accuracy_pointwise": float(pointwise[i].mean()),
                "attack_success_rate": success,
                "mean_linf": float(arrays["linf"][i].mean()),
                "max_linf": float(arrays["linf"][i].max(initial=0.0)),
                "mean_l2": float(arrays["l2"][i].mean()),
                "max_l2": float(arrays["l2"][i].max(initial=0.0)),
                "grad_evals": int(arrays["grad_evals"][i]),
                "seconds": float(arrays["seconds"][i]),
            }
        )
    result = pd.DataFrame(rows)[RESULT_COLUMNS]
    e = len(epsilons)
    samples = pd.DataFrame(
        {
            "model": meta["model"],
            "attack": meta["attack"],
            "eps": np.repeat(np.asarray(epsilons, dtype=float), len(y)),
            "index": np.tile(data.indices.numpy(), e),
            "label": np.tile(y, e),
            "clean_pred": np.tile(arrays["clean_pred"], e),
            "adv_pred": arrays["adv_pred"].reshape(-1),
            "target": np.tile(arrays["target"], e),
            "correct": robust.reshape(-1),
            "correct_pointwise": pointwise.reshape(-1),
            "linf": arrays["linf"].reshape(-1),
            "l2": arrays["l2"].reshape(-1),
        }
    )[SAMPLE_COLUMNS]
    return result, samples


def run_cell(task: CellTask) -> CellOutcome:
    """Run one cell (in any process) and write ``cells/<id>/`` atomically; ``done.json`` last."""
    start = time.perf_counter()
    if task.threads > 0:
        torch.set_num_threads(task.threads)
    device = torch.device(task.device)
    cell = task.cell
    model = task.model.load(device)
    attack = make_attack(cell.attack.name, **cell.attack.params)
    arrays, extras = evaluate_cell(
        model,
        attack,
        task.data,
        cell.epsilons,
        seed=derive_seed(task.seed, cell.model.id, cell.attack.id),
        device=device,
        batch_size=task.batch_size,
        examples=task.examples,
        target_class=cell.attack.target_class,
    )
    meta = {
        "suite": task.suite_name,
        "dataset": task.data.name,
        "split": task.data.split,
        "model": cell.model.id,
        "attack": cell.attack.id,
        "attack_name": cell.attack.name,
        "attack_params": json.dumps(_cell_params(attack, cell), sort_keys=True),
        "norm": attack.norm.value,
        "targeted": attack.targeted,
        "seed": task.seed,
        "device": task.device,
    }
    rows, samples = tidy(arrays, data=task.data, epsilons=cell.epsilons, attack=attack, meta=meta)
    if cell.attack.minimal_eps:
        from bench.minimal_eps import add_minimal_eps

        rows, samples, extras["minimal_eps"] = add_minimal_eps(
            rows,
            samples,
            model=model,
            attack=attack,
            data=task.data,
            epsilons=cell.epsilons,
            seed=derive_seed(task.seed, cell.model.id, cell.attack.id),
            device=device,
            batch_size=task.batch_size,
            targets=arrays["target"] if attack.targeted else None,
        )
    out = RunDir(Path(task.run_dir)).cell(cell.id)
    atomic_write_parquet(rows, out / "rows.parquet")
    atomic_write_parquet(samples, out / "samples.parquet")
    atomic_write_npz(
        out / "examples.npz",
        x=arrays["example_x"],
        y=arrays["example_y"],
        x_adv=arrays["example_adv"],
        adv_pred=arrays["adv_pred"][:, : len(arrays["example_y"])],
        clean_pred=arrays["clean_pred"][: len(arrays["example_y"])],
        epsilons=np.asarray(cell.epsilons, dtype=np.float64),
    )
    seconds = time.perf_counter() - start
    done = {
        "cell": cell.id,
        "attack": repr(attack),
        "seconds": seconds,
        "attack_seconds": float(arrays["seconds"].sum()),
        "extras": _jsonable(extras),
    }
    write_json(out / "done.json", done)
    return CellOutcome(cell.id, rows, samples, seconds, float(arrays["seconds"].sum()), done["extras"])


def _cell_params(attack: Attack, cell: Cell) -> dict[str, Any]:
    """The attack's hyperparameters plus the suite-level target class, if any (the cell's identity)."""
    params = attack.params()
    if cell.attack.target_class is not None:
        params["target_class"] = cell.attack.target_class
    return params


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def load_cell(run_dir: RunDir, cell_id: str) -> CellOutcome:
    """A finished cell read back from the run directory (for resume and re-sync)."""
    out = run_dir.cell(cell_id)
    done = json.loads((out / "done.json").read_text())
    return CellOutcome(
        cell_id,
        pd.read_parquet(out / "rows.parquet"),
        pd.read_parquet(out / "samples.parquet"),
        float(done["seconds"]),
        float(done.get("attack_seconds", 0.0)),
        done.get("extras", {}),
    )


# -- the suite ---------------------------------------------------------------------------------


@dataclass
class RunOutcome:
    run_dir: RunDir
    results: pd.DataFrame
    manifest: dict[str, Any]
    mlflow_run_id: str | None = None
    tracking_warning: str | None = None


def default_run_dir(suite: Suite, root: Path = Path("runs")) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    return root / suite.name / stamp


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, cwd=Path(__file__).parent
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def package_versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in (
        "torch",
        "torchvision",
        "adversarial-robustness-toolbox",
        "mlflow",
        "numpy",
        "pandas",
        "bench-harness",
    ):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _threads_per_worker(n_jobs: int) -> int:
    """Torch threads per worker so that workers x threads does not exceed the cores (``-1`` = all cores)."""
    from joblib import effective_n_jobs

    cores = os.cpu_count() or 1
    return max(1, cores // max(1, effective_n_jobs(n_jobs)))


def run_suite(
    suite: Suite,
    *,
    out: Path | None = None,
    n_jobs: int | None = None,
    limit: int | None = None,
    track: bool | None = None,
    device: str | None = None,
    echo: Callable[[str], None] | None = print,
    resume: bool = False,
    backend: str | None = None,
    scheduler: str | None = None,
) -> RunOutcome:
    """Run every cell of ``suite`` and write its run directory; returns the tidy results.

    With ``resume`` the run directory ``out`` of an interrupted run of the same
    suite is continued: finished cells are read back, the others are run.
    ``backend``/``scheduler`` override the suite's joblib backend (loky,
    threading, dask) and dask.distributed scheduler address.
    """
    from joblib import Parallel, delayed

    wall = time.perf_counter()
    backend = backend or suite.backend
    scheduler = scheduler if scheduler is not None else suite.scheduler
    _check_backend(backend, scheduler)
    if n_jobs is not None:
        try:
            check_n_jobs(n_jobs)
        except ValueError as exc:
            raise RunError(f"--n-jobs: {exc}") from None
    dev = resolve_device(device or suite.device)
    run = RunDir(Path(out) if out is not None else default_run_dir(suite))
    try:
        run.root.mkdir(parents=True, exist_ok=True)
        probe = run.root / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise RunError(f"output directory {run.root}: not writable ({exc.strerror})") from None
    resumed_uid = _claim_run_dir(run, suite, resume=resume, limit=limit)

    full = load_dataset(suite.dataset.name, suite.dataset.split, **suite.dataset.options)
    n = suite.dataset.n
    if suite.dataset.offset:
        if suite.dataset.offset >= len(full):
            raise RunError(
                f"dataset.offset: {suite.dataset.offset} is not below the size of the {suite.dataset.split} split "
                f"of {suite.dataset.name!r} ({len(full)} samples)"
            )
        start = suite.dataset.offset  # indices keep positions in the full split, so pairing stays honest
        full = dataclasses.replace(full, x=full.x[start:], y=full.y[start:], indices=full.indices[start:])
    if n is not None and n > len(full):
        raise RunError(
            f"dataset.n: {n} is larger than the {suite.dataset.split} split of "
            f"{suite.dataset.name!r} ({len(full)} samples)"
        )
    if limit is not None:
        n = min(n or limit, limit)
    data = full.subset(n)
    _check_eps_bounds(suite, data)
    _check_target_classes(suite, data)

    manifest: dict[str, Any] = {
        "run_uid": resumed_uid or f"{suite.name}-{suite.digest}-{run.root.name}-{os.getpid()}",
        "suite": suite.name,
        "suite_digest": suite.digest,
        "started": _dt.datetime.now(_dt.UTC).isoformat(),
        "git_commit": git_commit(),
        "versions": package_versions(),
        "platform": platform.platform(),
        "device": str(dev),
        "seed": suite.seed,
        "data": data.describe(),
        "limit": limit,
        "argv": sys.argv,
    }
    atomic_write_text(run.suite, dump_yaml(suite.resolved()))
    write_json(run.manifest, {**manifest, "status": "running"})

    prep = time.perf_counter()
    refs, model_info = prepare_models(suite, data, dev)
    write_json(run.models, model_info)
    prep_seconds = time.perf_counter() - prep

    jobs = n_jobs if n_jobs is not None else suite.n_jobs
    threads = _threads_per_worker(jobs) if jobs != 1 else 0
    if backend == "dask":
        # One torch thread per dask task: a worker runs as many tasks at once as it has threads.
        jobs, threads = (-1 if jobs == 1 else jobs), 1
    tasks = [
        CellTask(
            cell,
            refs[cell.model.id],
            data,
            suite.name,
            suite.seed,
            str(dev),
            suite.batch_size,
            suite.tracking.examples,
            str(run.root),
            threads,
        )
        for cell in expand(suite)
    ]
    pending = [t for t in tasks if not run.cell_done(t.cell.id)]
    if echo:
        where = f"{backend}, n_jobs={jobs}" + (f", scheduler {scheduler}" if scheduler else "")
        echo(f"running {len(pending)} cell(s) of suite {suite.name!r} on {len(data)} samples ({dev}, {where})")
    outcomes: dict[str, CellOutcome] = {}
    with _parallel_backend(backend, scheduler):
        for outcome in Parallel(n_jobs=jobs, return_as="generator")(delayed(run_cell)(t) for t in pending):
            outcomes[outcome.cell_id] = outcome
            if echo:
                echo(f"  done {outcome.cell_id} in {outcome.seconds:.1f}s")
    for t in tasks:
        if t.cell.id not in outcomes:
            outcomes[t.cell.id] = load_cell(run, t.cell.id)
    ordered = [outcomes[t.cell.id] for t in tasks]

    results = pd.concat([o.rows for o in ordered], ignore_index=True)
    results = select_columns(results, RESULT_COLUMNS, OPTIONAL_RESULT_COLUMNS)
    samples = pd.concat([o.samples for o in ordered], ignore_index=True)
    samples = select_columns(samples, SAMPLE_COLUMNS, OPTIONAL_SAMPLE_COLUMNS)
    atomic_write_text(run.results_csv, results.to_csv(index=False))
    atomic_write_parquet(results, run.results_parquet)
    atomic_write_parquet(samples, run.samples)

    manifest.update(
        status="finished",
        finished=_dt.datetime.now(_dt.UTC).isoformat(),
        wall_seconds=time.perf_counter() - wall,
        prepare_seconds=prep_seconds,
        attack_seconds=sum(o.attack_seconds for o in ordered),
        cell_seconds={o.cell_id: o.seconds for o in ordered},
        backend=backend,
        scheduler=scheduler,
        cell_extras={o.cell_id: o.extras for o in ordered if o.extras},
        clean_accuracy={k: v["clean_accuracy"] for k, v in model_info.items()},
    )
    write_json(run.manifest, manifest)
    outcome = RunOutcome(run, results, manifest)
    _write_figures(run, results)
    if suite.crosscheck:
        _write_crosscheck(run, suite, refs, data, dev, echo)
    _write_report(run)

    if track if track is not None else suite.tracking.enabled:
        from bench.tracking import TrackingUnavailable, sync_run_dir

        try:
            outcome.mlflow_run_id = sync_run_dir(run.root)
        except TrackingUnavailable as exc:
            outcome.tracking_warning = (
                f"MLflow tracking failed ({exc}); the results are safe in {run.root}. "
                f"Mirror them later with: bench sync {run.root}"
            )
            warnings.warn(outcome.tracking_warning, TrackingWarning, stacklevel=2)
    return outcome


def _check_target_classes(suite: Suite, data: DataSplit) -> None:
    """Refuse a target class the data set does not have, before any cell runs."""
    for i, spec in enumerate(suite.attacks):
        if spec.target_class is not None and spec.target_class >= data.num_classes:
            raise RunError(
                f"attacks[{i}].target_class: class {spec.target_class} does not exist: "
                f"data set {data.name!r} has classes 0..{data.num_classes - 1}"
            )


def _check_eps_bounds(suite: Suite, data: DataSplit) -> None:
    """Refuse epsilons the data's bounds and shape make meaningless (l2 and patch need the input shape)."""
    from bench.suite import eps_bound_problems

    for i, spec in enumerate(suite.attacks):
        norm = make_attack(spec.name, **spec.params).norm.value
        field = f"attacks[{i}].epsilons" if spec.epsilons is not None else "epsilons"
        for problem in eps_bound_problems(
            norm, suite.epsilons_for(spec), width=data.bounds.width, input_shape=data.input_shape
        ):
            raise RunError(f"{field}: {problem} (data set {data.name!r})")


BACKENDS = ("loky", "threading", "dask")


def _check_backend(backend: str, scheduler: str | None) -> None:
    if backend not in BACKENDS:
        raise RunError(f"backend: {backend!r} is not allowed (allowed: {', '.join(BACKENDS)})")
    if backend == "dask" and not scheduler:
        raise RunError("backend: dask needs a scheduler address (--scheduler tcp://HOST:8786 or 'scheduler:')")
    if backend != "dask" and scheduler:
        raise RunError(f"scheduler: {scheduler!r} is only used with backend: dask (got backend {backend!r})")


@contextlib.contextmanager
def _parallel_backend(backend: str, scheduler: str | None) -> Iterator[None]:
    """joblib's backend for the cells; for dask, a ``dask.distributed.Client`` connected to ``scheduler``."""
    from joblib import parallel_config

    if backend != "dask":
        with parallel_config(backend=backend):
            yield
        return
    try:
        from dask.distributed import Client
    except ImportError:
        raise RunError("backend: dask needs dask[distributed]: pip install 'bench-harness[cluster]'") from None
    try:
        client = Client(scheduler, timeout=30)
    except (OSError, TimeoutError) as exc:
        raise RunError(f"scheduler: cannot connect to dask scheduler {scheduler!r} ({exc})") from None
    try:
        with parallel_config(backend="dask"):
            yield
    finally:
        client.close()


def _claim_run_dir(run: RunDir, suite: Suite, *, resume: bool, limit: int | None) -> str | None:
    """Refuse to mix two runs in one folder; on resume, check it is the same suite. Returns the old run id."""
    cells = run.root / "cells"
    if not resume:
        if cells.is_dir() and any(cells.iterdir()):
            raise RunError(
                f"{run.root} already holds results of a run; continue it with --resume {run.root} "
                "or choose another --out"
            )
        return None
    if not run.manifest.exists():
        raise RunError(f"--resume {run.root}: not a run directory (manifest.json missing)")
    try:
        old = run.read_manifest()
    except ValueError:
        raise RunError(f"--resume {run.root}: manifest.json is unreadable") from None
    if old.get("suite_digest") != suite.digest:
        raise RunError(
            f"--resume {run.root}: the run was started from a different suite "
            f"(digest {old.get('suite_digest')}, this suite {suite.digest}); resume with the same suite file"
        )
    if old.get("limit") != limit:
        raise RunError(f"--resume {run.root}: the run used --limit {old.get('limit')}, not {limit}")
    return str(old["run_uid"]) if old.get("run_uid") else None


def _write_report(run: RunDir) -> None:
    """Render ``report/report.html`` and ``report.md`` (logged to MLflow with the run)."""
    from reports.render import render_run_dir

    try:
        render_run_dir(run.root)
    except Exception as exc:  # the results are already on disk; `bench report` can redo a failed report
        warnings.warn(
            f"report rendering failed ({type(exc).__name__}: {exc}); retry with: bench report {run.root}", stacklevel=3
        )


def _write_crosscheck(
    run: RunDir,
    suite: Suite,
    refs: dict[str, ModelRef],
    data: DataSplit,
    device: torch.device,
    echo: Callable[[str], None] | None,
) -> None:
    """``crosscheck.csv``/``.json``: the suite's native attacks vs ART on its models (100 samples, one eps each)."""
    from bench.crosscheck import CROSSCHECK_SAMPLES, crosscheck_models, pair_results, suite_pairs, write_crosscheck

    pairs = suite_pairs(suite.attacks, suite.epsilons_for)
    if not pairs:
        if echo:
            echo("cross-check: no attack of this suite has an ART counterpart (fgsm, bim, pgd); nothing to compare")
        return
    models = {model_id: ref.load(device) for model_id, ref in refs.items()}
    table = crosscheck_models(models, data, pairs=pairs, seed=suite.seed, n=CROSSCHECK_SAMPLES)
    write_crosscheck(table, run.root, meta={"suite": suite.name, "dataset": data.name, "split": data.split})
    if echo:
        failed = [pair for pair, ok in pair_results(table).items() if not ok]
        verdict = f"{len(failed)} pair(s) FAILED: {', '.join(failed)}" if failed else "all pairs agree"
        echo(f"cross-check against ART on {min(len(data), CROSSCHECK_SAMPLES)} samples: {verdict}")


def _write_figures(run: RunDir, results: pd.DataFrame) -> None:
    from bench.fsutil import safe_filename
    from reports.figures import curve_figure, save_figure

    run.figures.mkdir(exist_ok=True)
    for attack, rows in results.groupby("attack", sort=False):
        path = run.figures / f"curve_{safe_filename(str(attack))}.png"
        save_figure(curve_figure(rows, hue="model", title=f"{attack}"), path)
