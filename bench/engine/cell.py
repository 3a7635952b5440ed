"""One cell (model x attack): the epsilon sweep batch by batch, tidy rows, and its folder in the run directory.

A cell runs in any process (joblib worker, dask task): :class:`CellTask` carries
everything it needs (picklable); :func:`run_cell` writes ``cells/<id>/``
atomically, ``done.json`` last, so a finished cell is never lost and a resumed
run reads it back with :func:`load_cell`.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from bench import limits, progress, stats
from bench.attacks import Attack, AttackContext, derive_seed, make_attack, perturbation_norms
from bench.data import DataSplit
from bench.engine.models import ModelRef
from bench.minimal_eps import add_minimal_eps
from bench.rundir import (
    RESULT_COLUMNS,
    SAMPLE_COLUMNS,
    RunDir,
    RunError,
    atomic_write_npz,
    atomic_write_parquet,
    read_json_capped,
    write_json,
)
from bench.runtrust import cell_digests, check_cell_digests, check_result_values, check_sample_rows, read_cell_table
from bench.suite import Cell
from bench.types import eps_label


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


PER_SAMPLE = "per_sample"
"""The sweep extra holding per-sample columns ``{column: (E, N) values}``: written to ``samples.parquet``
(``OPTIONAL_SAMPLE_COLUMNS``), with per-eps value counts in the cell's extras as ``<column>_counts``."""

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
    progress_id: str = "cell",
    gradient_logits: bool = False,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Run ``attack`` over ``epsilons`` on ``data`` batch by batch (pooled attacks: see :func:`pool_size`).

    ``target_class``: for targeted attacks, the class every sample is driven to
    (otherwise the attack's own ``target_mode`` picks targets). ``gradient_logits``:
    the model's logits under autograd equal its inference logits (``gradient_logits_exact``
    of the model checks), so a gradient at the clean input also gives the clean predictions.
    The clean pass follows the sweep: where the sweep yields its input at eps 0 (linf, l2 and
    l0 attacks on inputs within the bounds) it is that eps's scoring, otherwise one more forward.

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
    per_sample: dict[str, list[np.ndarray]] = {}
    chunk = pool_size(attack, batch_size, data.input_shape)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        xb = data.x[start:stop].to(device)
        yb = data.y[start:stop].to(device)
        ctx = AttackContext(seed=derive_seed(seed, start), batch_size=batch_size, gradient_logits=gradient_logits)
        tick = time.perf_counter()
        used = 0
        given = None if target_class is None else torch.full_like(yb, target_class)
        # The clean pass follows the sweep: an attack may not write into its input (an inference
        # tensor has no write counter, and cannot be written in place outside inference mode).
        written = None if xb.is_inference() else xb._version
        sweep = attack.sweep(model, xb, yb, epsilons, target=given, bounds=data.bounds, ctx=ctx)
        if sweep.targets is not None:  # resolved once, by the sweep
            target[start:stop] = sweep.targets.cpu().numpy()
        for i, (eps, x_adv) in enumerate(sweep):
            if eps != epsilons[i]:
                raise RunError(f"{attack!r} yielded eps {eps} where {epsilons[i]} was expected")
            adv_pred[i, start:stop] = ctx.logits(model, x_adv).argmax(1).cpu().numpy()
            if x_adv.data_ptr() != xb.data_ptr():  # else the sweep yielded the clean input (eps 0): norms 0
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
            progress.eps_done(progress_id, i, e, eps, stop, n)
        if written is not None and xb._version != written:
            raise RunError(f"{attack!r} wrote into its input tensor (attacks must leave x unchanged)")
        # After the sweep: its eps-0 scoring (or, with gradient_logits, a gradient at the clean
        # input) computed these where the sweep yielded its input at eps 0; else a forward here.
        clean_pred[start:stop] = ctx.logits(model, xb).argmax(1).cpu().numpy()
        for key, value in sweep.extras.items():
            if key == PER_SAMPLE:  # per-sample columns (E, chunk), e.g. reliable's broken_by: samples.parquet
                for column, per_eps in value.items():
                    per_sample.setdefault(column, []).append(np.asarray(per_eps, dtype=object).reshape(e, -1))
            else:
                extras.setdefault(key, []).append(value)
    for column, parts in per_sample.items():
        counts = [pd.Series(row[row != ""]).value_counts(sort=False) for row in np.concatenate(parts, axis=1)]
        extras[f"{column}_counts"] = {
            eps_label(eps): {str(k): int(v) for k, v in c.items()} for eps, c in zip(epsilons, counts, strict=True)
        }
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
        **{f"{PER_SAMPLE}:{column}": np.concatenate(parts, axis=1) for column, parts in per_sample.items()},
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
    extra_columns = {k.split(":", 1)[1]: v.reshape(-1) for k, v in arrays.items() if k.startswith(f"{PER_SAMPLE}:")}
    return result, samples.assign(**extra_columns) if extra_columns else samples


def run_cell(task: CellTask) -> CellOutcome:
    """Run one cell (in any process) and write ``cells/<id>/`` atomically; ``done.json`` last."""
    start = time.perf_counter()
    if task.threads > 0:
        torch.set_num_threads(task.threads)
    device = torch.device(task.device)
    cell = task.cell
    model = task.model.load(device)
    attack = make_attack(cell.attack.name, **cell.attack.params)
    data = task.data.subset(cell.attack.n)  # the suite's samples, or the first n of them (AttackSpec.n)
    arrays, extras = evaluate_cell(
        model,
        attack,
        data,
        cell.epsilons,
        seed=derive_seed(task.seed, cell.model.id, cell.attack.id),
        device=device,
        batch_size=task.batch_size,
        examples=task.examples,
        target_class=cell.attack.target_class,
        progress_id=cell.id,
        gradient_logits=task.model.gradient_logits,
    )
    meta = {
        "suite": task.suite_name,
        "dataset": data.name,
        "split": data.split,
        "model": cell.model.id,
        "attack": cell.attack.id,
        "attack_name": cell.attack.name,
        "attack_params": json.dumps(_cell_params(attack, cell), sort_keys=True),
        "norm": attack.norm.value,
        "targeted": attack.targeted,
        "seed": task.seed,
        "device": task.device,
    }
    rows, samples = tidy(arrays, data=data, epsilons=cell.epsilons, attack=attack, meta=meta)
    attack_seconds = float(arrays["seconds"].sum())
    if cell.attack.minimal_eps:
        tick = time.perf_counter()
        rows, samples, extras["minimal_eps"] = add_minimal_eps(
            rows,
            samples,
            model=model,
            attack=attack,
            data=data,
            epsilons=cell.epsilons,
            seed=derive_seed(task.seed, cell.model.id, cell.attack.id),
            device=device,
            batch_size=task.batch_size,
            targets=arrays["target"] if attack.targeted else None,
        )
        # the bisection runs the attack at more radii: time inside the attack too (bench perf's P4)
        extras["minimal_eps_seconds"] = time.perf_counter() - tick
        attack_seconds += extras["minimal_eps_seconds"]
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
        "attack_seconds": attack_seconds,
        "extras": _jsonable(extras),
        "sha256": cell_digests(out),  # checked before a resume believes the cell (bench/runtrust.py)
    }
    write_json(out / "done.json", done)
    return CellOutcome(cell.id, rows, samples, seconds, attack_seconds, done["extras"])


def _cell_params(attack: Attack, cell: Cell) -> dict[str, Any]:
    """The attack's hyperparameters plus the suite-level target class, if any (the cell's identity)."""
    params = attack.params()
    if cell.attack.target_class is not None:
        params["target_class"] = cell.attack.target_class
    return params


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def load_cell(run_dir: RunDir, cell_id: str, *, trust_edited: bool = False) -> tuple[CellOutcome, str | None]:
    """A finished cell read back from the run directory (for resume), checked before it is believed.

    Its tables must have the sha256 its ``done.json`` recorded (unless ``trust_edited``; the second value is
    then the edit it accepted) and possible values (:mod:`bench.runtrust`).
    """
    out = run_dir.cell(cell_id)
    done = read_json_capped(out / "done.json", what="cell record (done.json)")
    if not isinstance(done, dict):
        raise RunError(f"{out / 'done.json'}: not a cell record (a JSON object)")
    edited = check_cell_digests(out, done, trust_edited=trust_edited)
    rows = read_cell_table(out / "rows.parquet", what="cell results", rows=limits.RESULT_ROWS)
    check_result_values(rows, out / "rows.parquet")
    samples = read_cell_table(out / "samples.parquet", what="cell per-sample table", rows=limits.SAMPLE_ROWS)
    check_sample_rows(samples, out / "samples.parquet")
    try:
        seconds, attack_seconds = float(done["seconds"]), float(done.get("attack_seconds", 0.0))
    except (KeyError, TypeError, ValueError):
        raise RunError(f"{out / 'done.json'}: seconds: missing or not a number") from None
    extras = done.get("extras", {})
    return CellOutcome(
        cell_id, rows, samples, seconds, attack_seconds, extras if isinstance(extras, dict) else {}
    ), edited
