"""P4 of ``bench perf``: a suite run in this process, its wall time split into attacks, clean passes and overhead."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from bench.attacks import make_attack
from bench.attacks.base import yields_input_at_zero
from bench.data import load_dataset, select
from bench.engine import resolve_device, run_suite, zoo_model
from bench.memory import peak_rss_bytes
from bench.perf.config import PerfConfig
from bench.perf.timing import Bench, time_interleaved
from bench.suite import Suite, load_suite, validate
from bench.tracking import time_sync_into_fresh_store
from reports import drawing
from reports.figures import attack_curves
from reports.render import render_run_dir
from reports.sample_index import forget_computed


def warm_zoo_models(suite: Suite) -> dict[str, nn.Module]:
    """The suite's zoo models by id, trained now if the checkpoint cache lacks them (untimed, before a timed run)."""
    device = resolve_device(suite.device)
    return {
        spec.id: zoo_model(
            spec.name,
            suite.dataset.name,
            seed=suite.seed,
            device=device,
            recipe=dict(spec.recipe),
            data_options=dict(suite.dataset.options),
        ).model
        for spec in suite.models
        if spec.factory is None and spec.weights is None
    }


def measure_harness(cfg: PerfConfig) -> dict[str, Any]:
    """Run ``cfg.harness_suite`` once (warm checkpoint cache) and split its wall time (P4)."""
    assert cfg.harness_suite is not None
    suite = load_suite(cfg.harness_suite)
    if cfg.harness_override:
        raw = suite.resolved()
        raw["dataset"] = {**raw["dataset"], "name": cfg.data, "n": cfg.harness_n, "options": {}}
        raw["models"] = [{"name": m} for m in cfg.models]
        raw["crosscheck"] = False
        suite = validate(raw, source=f"{cfg.harness_suite} (reduced)")
    device = resolve_device(suite.device)
    models = warm_zoo_models(suite)
    with tempfile.TemporaryDirectory(prefix="bench-perf-") as tmp:
        start = time.perf_counter()
        outcome = run_suite(suite, out=Path(tmp) / "run", track=False, echo=None)
        total = time.perf_counter() - start
        peak = peak_rss_bytes()
        manifest = outcome.manifest
        drawing_peak = drawing.helper_peak_rss_bytes()
        # Re-time the steps after the manifest is written, on the finished run directory: the curves
        # alone, then the report with the curves drawn beside it, as the run does (reports.drawing).
        tick = time.perf_counter()
        drawing.submit(attack_curves, outcome.results).result()
        figures = time.perf_counter() - tick
        forget_computed()  # the run's report computed the worst cases first: so does this one
        tick = time.perf_counter()
        render_run_dir(outcome.run_dir.root, drawn_curves=drawing.submit(attack_curves, outcome.results))
        report = time.perf_counter() - tick
        mlflow_seconds = time_sync_into_fresh_store(outcome.run_dir.root, Path(tmp))
        # The cross-check's own attack calls (native and ART) are time inside attacks too.
        crosscheck_csv = outcome.run_dir.root / "crosscheck.csv"
        crosscheck_attacks = 0.0
        if crosscheck_csv.exists():
            table = pd.read_csv(crosscheck_csv)
            crosscheck_attacks = float(table["native_seconds"].sum() + table["art_seconds"].sum())
    split = load_dataset(suite.dataset.name, suite.dataset.split, **suite.dataset.options)
    data = select(split, offset=suite.dataset.offset, n=suite.dataset.n)
    clean = 0.0
    for model in models.values():
        fwd, _, _ = time_interleaved(
            {"forward": _forward_all(model, suite.batch_size, device)},
            data.x,
            data.y,
            repeats=3,
            warmup=min(len(data), suite.batch_size),
        )
        # One clean pass in prepare_models, and one per cell whose sweep does not score the clean
        # input itself at eps 0 (bench.attacks.base.yields_input_at_zero); in the others the clean
        # predictions are the eps-0 scoring, inside the attack's time.
        clean += fwd["forward"] * (1 + _separate_clean_passes(suite))
    attack = float(manifest["attack_seconds"])
    cells = float(sum(manifest["cell_seconds"].values()))
    post = total - float(manifest["wall_seconds"])
    overhead = total - attack - crosscheck_attacks - clean
    return {
        "suite": str(cfg.harness_suite),
        "reduced": cfg.harness_override,
        "n": len(data),
        "models": list(models),
        "cells": len(manifest["cell_seconds"]),
        "crosscheck": suite.crosscheck,
        "wall_seconds": total,
        "prepare_seconds": float(manifest["prepare_seconds"]),
        "attack_seconds": attack,
        "crosscheck_attack_seconds": crosscheck_attacks,
        "clean_seconds": clean,
        "cell_seconds": cells,
        "after_results_seconds": post,
        "drawing_process": drawing.running(),
        "figures_seconds": figures,
        "report_seconds": report,
        "crosscheck_and_rest_seconds": max(0.0, post - report),
        "crosscheck_overhead_seconds": max(0.0, post - report - crosscheck_attacks),
        "overhead_seconds": overhead,
        "overhead_fraction": overhead / total,
        "overhead_fraction_without_report": (overhead - report) / (total - report),
        "peak_rss_bytes": peak,
        "drawing_peak_rss_bytes": drawing_peak,
        # both peaks added: an upper bound (they need not coincide, and share the forkserver's pages)
        "total_peak_rss_bytes": peak + (drawing_peak or 0),
        "mlflow_seconds": mlflow_seconds,
        "mlflow_fraction": mlflow_seconds / total,
    }


def _separate_clean_passes(suite: Suite) -> int:
    """Attacks of ``suite`` whose cells make a clean pass of their own (outside the sweep's time)."""
    return sum(
        not yields_input_at_zero(make_attack(spec.name, **spec.params), suite.epsilons_for(spec))
        for spec in suite.attacks
    )


def _forward_all(model: nn.Module, batch_size: int, device: torch.device) -> Bench:
    @torch.no_grad()
    def run(x: torch.Tensor, y: torch.Tensor) -> None:
        for i in range(0, len(x), batch_size):
            model(x[i : i + batch_size].to(device))

    return run
