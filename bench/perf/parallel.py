"""``bench perf --parallel``: shipped suites run serially and with ``--n-jobs 2``, same results, wall times compared.

Each suite runs four times in this process with a warm checkpoint cache (its models are
trained or loaded first, untimed), without MLflow, into temporary run directories:
twice serially (``n_jobs=1``: one process, torch's intra-op threads on every core) and
twice with ``--n-jobs n_jobs`` as a user runs it (in :data:`ORDER`, fastest of each kept):
loky workers with ``cores // n_jobs`` torch threads each, or serial cells where
:func:`bench.engine.parallel.choose_workers` predicts workers to be slower (its plan is in
the JSON). The parallel time includes starting the workers (each imports torch) and
shipping them the data, as a user's run does. The results (every column but the timings)
must be identical.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from bench.engine import run_suite
from bench.perf.config import PerfConfig
from bench.perf.harness import warm_zoo_models
from bench.suite import load_suite

TIMING_COLUMNS = ("seconds", "grad_evals")
"""Result columns that may differ between modes (time; gradient counts are per process but equal in practice)."""

ORDER = ("serial", "parallel", "parallel", "serial")
"""Each mode twice, in ABBA order, fastest kept: a machine that drifts over the minutes of a
measurement (three serial runs of attacks_mnist in one process took 49.8, 49.9 and 55.9 s
on the 2-core CPU, the third planned serial by ``--n-jobs 2``) favours neither mode."""

NEVER_SLOWER = 0.97
"""Serial / parallel wall time at least this: "never slower", with 3% for timing noise."""

SMALL_MODEL_SPEEDUP = 1.3
"""Serial / parallel wall time at least this on the small-model suite (``PerfConfig.parallel_small``)."""


def _comparable(results: pd.DataFrame) -> pd.DataFrame:
    keep = [c for c in results.columns if c not in TIMING_COLUMNS]
    return results[keep].sort_values(["model", "attack", "eps"]).reset_index(drop=True)


def measure_suite(path: Path, n_jobs: int) -> dict[str, Any]:
    """One suite, serially and with ``--n-jobs n_jobs`` (:data:`ORDER`): the faster wall time of each mode,
    the speed-up, every run's time, whether all four results are identical, and the plan ``--n-jobs`` ran."""
    suite = load_suite(path)
    warm_zoo_models(suite)  # untimed
    walls: dict[str, list[float]] = {"serial": [], "parallel": []}
    results: list[pd.DataFrame] = []
    plan: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-perf-parallel-") as tmp:
        for i, mode in enumerate(ORDER):
            start = time.perf_counter()
            outcome = run_suite(
                suite, out=Path(tmp) / f"{i}-{mode}", track=False, echo=None, n_jobs=1 if mode == "serial" else n_jobs
            )
            walls[mode].append(time.perf_counter() - start)
            results.append(_comparable(outcome.results))
            if mode == "parallel":
                plan = outcome.manifest.get("workers") or {}
    identical = all(r.equals(results[0]) for r in results[1:])
    return {
        "suite": str(path),
        "cells": len(suite.models) * len(suite.attacks),
        "n_jobs": n_jobs,
        "serial_seconds": min(walls["serial"]),
        "parallel_seconds": min(walls["parallel"]),
        "speedup": min(walls["serial"]) / min(walls["parallel"]),
        "serial_runs": walls["serial"],
        "parallel_runs": walls["parallel"],
        "identical_results": identical,
        "workers": plan,  # what --n-jobs ran: bench.engine.parallel.choose_workers' plan and its reason
    }


def measure_parallel(cfg: PerfConfig, *, echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Every suite of ``cfg.parallel_suites``; the JSON section ``parallel``."""
    points = []
    for path in cfg.parallel_suites:
        if echo:
            echo(f"parallel: {path}, serial and --n-jobs {cfg.parallel_n_jobs}")
        points.append(point := measure_suite(Path(path), cfg.parallel_n_jobs))
        if echo:
            echo(
                f"  serial {point['serial_seconds']:.1f} s, --n-jobs {cfg.parallel_n_jobs} "
                f"{point['parallel_seconds']:.1f} s: {point['speedup']:.2f}x, "
                f"results {'identical' if point['identical_results'] else 'DIFFERENT'}; "
                f"{point['workers'].get('reason', '')}"
            )
    small = None if cfg.parallel_small is None else str(cfg.parallel_small)
    return {"n_jobs": cfg.parallel_n_jobs, "small_model_suite": small, "suites": points}


def parallel_targets(parallel: dict[str, Any]) -> list[dict[str, Any]]:
    """Per suite: never slower than serial and identical results; the small-model suite >= 1.3x."""
    targets = []
    for point in parallel["suites"]:
        name = Path(point["suite"]).name
        small = parallel["small_model_suite"] is not None and name == Path(parallel["small_model_suite"]).name
        bound = SMALL_MODEL_SPEEDUP if small else NEVER_SLOWER
        what = f"{name} serial / --n-jobs {point['n_jobs']} wall time"
        targets.append(
            {"id": "P6", "model": "", "what": what, "target": f">= {bound}"}
            | {"measured": point["speedup"], "measured_best": point["speedup"], "passed": point["speedup"] >= bound}
        )
        targets.append(
            {"id": "P6", "model": "", "what": f"{name} results identical serial and parallel", "target": "yes"}
            | {
                "measured": point["identical_results"],
                "measured_best": point["identical_results"],
                "passed": bool(point["identical_results"]),
            }
        )
    return targets
