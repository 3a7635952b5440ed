"""One certification cell (model x certifier): the eps sweep batch by batch, its rows and ``cells/<id>/``.

Like an attack cell (:mod:`bench.engine.cell`) it runs in any process from a picklable task, writes its tables
atomically with ``done.json`` last (sha256 of each table inside), and is read back, checked, on resume. Random
draws (smoothing's noise) are seeded per (suite seed, model, certifier, sample block), so the certificates do
not depend on where or in how many pieces the cell runs.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bench import limits, progress, stats
from bench.attacks import derive_seed
from bench.certified import CERTIFIED_COLUMNS, CERTIFIED_SAMPLE_COLUMNS
from bench.certify import certifier_abilities, make_certifier
from bench.data import DataSplit
from bench.engine.cell import CellOutcome
from bench.engine.models import ModelRef
from bench.rundir import RunDir, RunError, atomic_write_parquet, read_json_capped, write_json
from bench.runtrust import cell_digests, check_cell_digests, read_cell_table
from bench.suite import CertifyCell


@dataclass(frozen=True)
class CertifyTask:
    """Everything a worker needs to run one certification cell (picklable)."""

    cell: CertifyCell
    model: ModelRef
    data: DataSplit
    suite_name: str
    seed: int
    device: str
    batch_size: int
    run_dir: str
    threads: int


def certify_blocks(task: CertifyTask) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, int]:
    """Per-sample ``certified``, ``margin_lower``, ``radius`` ``(E, N)``, the clean predictions ``(N,)``, the
    seconds per eps ``(E,)`` and smoothing's abstentions, certifying ``batch_size`` samples at a time."""
    cell, device = task.cell, torch.device(task.device)
    model = task.model.load(device)
    certifier = make_certifier(cell.certifier.name, **cell.certifier.params)
    data = task.data.subset(cell.certifier.n)
    e, n = len(cell.epsilons), len(data)
    out = {
        "certified": np.zeros((e, n), dtype=bool),
        "margin_lower": np.full((e, n), np.nan, dtype=np.float32),
        "radius": np.full((e, n), np.nan, dtype=np.float32),
    }
    clean_pred = np.zeros(n, dtype=np.int64)
    seconds = np.zeros(e, dtype=np.float64)
    seeded = "seed" in {f.name for f in dataclasses.fields(certifier)}
    abstained = 0
    for start in range(0, n, task.batch_size):
        stop = min(start + task.batch_size, n)
        xb, yb = data.x[start:stop].to(device), data.y[start:stop].to(device)
        if seeded:  # per sample block: the same noise whatever runs the cell
            block = derive_seed(task.seed, cell.model.id, cell.certifier.id, start)
            certifier = dataclasses.replace(certifier, seed=block)
        tick = time.perf_counter()
        results = certifier.sweep(model, xb, yb, cell.epsilons, bounds=data.bounds)
        spent = time.perf_counter() - tick
        # a sweep's work is not always split per eps (smoothing certifies once): spread it evenly
        seconds += spent / e
        abstained += int(results[0].extras.get("abstained", 0)) if results else 0
        for i, result in enumerate(results):
            out["certified"][i, start:stop] = result.certified.numpy()
            out["margin_lower"][i, start:stop] = result.margin_lower.numpy()
            out["radius"][i, start:stop] = result.radius.numpy()
        with torch.no_grad():
            clean_pred[start:stop] = model(xb).argmax(1).cpu().numpy()
        progress.eps_done(cell.id, e - 1, e, cell.epsilons[-1], stop, n)
    return out, clean_pred, seconds, abstained


def certify_tidy(
    task: CertifyTask, arrays: dict[str, np.ndarray], clean_pred: np.ndarray, seconds: np.ndarray, abstained: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-eps rows (CERTIFIED_COLUMNS, the attacked side still empty) and per-sample rows of one cell."""
    cell = task.cell
    data = task.data.subset(cell.certifier.n)
    certifier = make_certifier(cell.certifier.name, **cell.certifier.params)
    y = data.y.numpy()
    n = len(y)
    kind = certifier_abilities(cell.certifier.name).kind
    rows = []
    for i, eps in enumerate(cell.epsilons):
        count = int(arrays["certified"][i].sum())
        low, high = stats.wilson_interval(count, n)
        radius = arrays["radius"][i]
        rows.append(
            {
                "suite": task.suite_name,
                "dataset": data.name,
                "split": data.split,
                "n": n,
                "model": cell.model.id,
                "certifier": cell.certifier.id,
                "certifier_name": cell.certifier.name,
                "certifier_params": json.dumps(_params(certifier), sort_keys=True, default=str),
                "kind": kind,
                "norm": certifier.norm.value,
                "eps": float(eps),
                "clean_accuracy": float((clean_pred == y).mean()) if n else float("nan"),
                "certified_accuracy": count / n if n else float("nan"),
                "certified_ci_low": low,
                "certified_ci_high": high,
                "attacked_accuracy": float("nan"),
                "attacked_by": "",
                "gap": float("nan"),
                "mean_radius": float(np.nanmean(radius)) if np.isfinite(radius).any() else float("nan"),
                "abstained": float(abstained) if kind == "smoothed" else float("nan"),
                "seconds": float(seconds[i]),
                "seed": task.seed,
                "device": task.device,
            }
        )
    e = len(cell.epsilons)
    samples = pd.DataFrame(
        {
            "model": cell.model.id,
            "certifier": cell.certifier.id,
            "eps": np.repeat(np.asarray(cell.epsilons, dtype=float), n),
            "index": np.tile(data.indices.numpy(), e),
            "label": np.tile(y, e),
            "certified": arrays["certified"].reshape(-1),
            "margin_lower": arrays["margin_lower"].reshape(-1),
            "radius": arrays["radius"].reshape(-1),
        }
    )[CERTIFIED_SAMPLE_COLUMNS]
    return pd.DataFrame(rows)[CERTIFIED_COLUMNS], samples


def _params(certifier: object) -> dict[str, object]:
    params = {f.name: getattr(certifier, f.name) for f in dataclasses.fields(certifier)}  # type: ignore[arg-type]
    return {k: getattr(v, "value", v) for k, v in params.items()}


def run_certify_cell(task: CertifyTask) -> CellOutcome:
    """Run one certification cell (in any process) and write ``cells/<id>/`` atomically, ``done.json`` last."""
    start = time.perf_counter()
    if task.threads > 0:
        torch.set_num_threads(task.threads)
    rows, samples = certify_tidy(task, *certify_blocks(task))
    out = RunDir(Path(task.run_dir)).cell(task.cell.id)
    atomic_write_parquet(rows, out / "rows.parquet")
    atomic_write_parquet(samples, out / "samples.parquet")
    total = time.perf_counter() - start
    done = {
        "cell": task.cell.id,
        "kind": "certify",
        "certifier": rows["certifier_params"].iloc[0],
        "seconds": total,
        "attack_seconds": float(rows["seconds"].sum()),
        "sha256": cell_digests(out),
    }
    write_json(out / "done.json", done)
    return CellOutcome(task.cell.id, rows, samples, total, float(rows["seconds"].sum()), {"kind": "certify"})


def load_certify_cell(run: RunDir, cell_id: str, *, trust_edited: bool = False) -> tuple[CellOutcome, str | None]:
    """A finished certification cell read back (for resume), its tables checked against ``done.json``."""
    out = run.cell(cell_id)
    done = read_json_capped(out / "done.json", what="cell record (done.json)")
    if not isinstance(done, dict) or done.get("kind") != "certify":
        raise RunError(f"{out / 'done.json'}: not a certification cell record (a JSON object with kind: certify)")
    edited = check_cell_digests(out, done, trust_edited=trust_edited)
    rows = read_cell_table(out / "rows.parquet", what="cell results", rows=limits.RESULT_ROWS)
    samples = read_cell_table(out / "samples.parquet", what="cell per-sample table", rows=limits.SAMPLE_ROWS)
    missing = [c for c in CERTIFIED_COLUMNS if c not in rows.columns]
    missing += [c for c in CERTIFIED_SAMPLE_COLUMNS if c not in samples.columns]
    if missing or len(rows) > limits.RESULT_ROWS or len(samples) > limits.SAMPLE_ROWS:
        raise RunError(f"{out}: not a certification cell's tables (missing: {', '.join(missing) or 'none'})")
    values = rows[["certified_accuracy", "certified_ci_low", "certified_ci_high"]].to_numpy(dtype=float)
    if not np.all(np.isnan(values) | ((values >= 0) & (values <= 1))):
        raise RunError(f"{out / 'rows.parquet'}: certified_accuracy: values outside [0, 1]")
    try:
        seconds = float(done["seconds"])
    except (KeyError, TypeError, ValueError):
        raise RunError(f"{out / 'done.json'}: seconds: missing or not a number") from None
    return CellOutcome(cell_id, rows, samples, seconds, float(rows["seconds"].sum()), {"kind": "certify"}), edited
