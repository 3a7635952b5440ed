"""The phases after the cells: tidy results on disk, the finished manifest, figures, cross-check, report, MLflow.

Each phase reads what the ones before wrote; a failing report or MLflow
mirror never loses results (they are on disk first). The manifest says
``incomplete`` once results are written and ``finished`` only after figures,
cross-check and report (:mod:`bench.runstate`).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from bench.crosscheck import CROSSCHECK_SAMPLES, crosscheck_models, pair_results, suite_pairs, write_crosscheck
from bench.data import DataSplit
from bench.engine.bracket import bracket, write_certified
from bench.engine.cell import CellOutcome
from bench.engine.models import ModelRef
from bench.fsutil import safe_filename
from bench.rundir import (
    OPTIONAL_RESULT_COLUMNS,
    OPTIONAL_SAMPLE_COLUMNS,
    RESULT_COLUMNS,
    SAMPLE_COLUMNS,
    RunDir,
    atomic_write_parquet,
    atomic_write_text,
    select_columns,
    write_json,
)
from bench.runstate import RunIncomplete, results_sha256, resume_hint
from bench.suite import Suite
from bench.tracking import TrackingUnavailable, sync_run_dir
from reports import drawing
from reports.figures import attack_curves
from reports.render import render_run_dir

Echo = Callable[[str], None] | None


class TrackingWarning(UserWarning):
    """MLflow mirroring failed; the run directory is complete and ``bench sync`` can retry."""


@dataclass
class RunOutcome:
    """What :func:`~bench.engine.runner.run_suite` returns: the run directory, its tidy results and manifest."""

    run_dir: RunDir
    results: pd.DataFrame
    manifest: dict[str, Any]
    mlflow_run_id: str | None = None
    tracking_warning: str | None = None


def write_results(run: RunDir, ordered: list[CellOutcome], certified: list[CellOutcome] | None = None) -> pd.DataFrame:
    """``results.csv``/``.parquet`` and ``samples.parquet`` from the cells, in suite order; returns the results.

    With ``certified`` outcomes (a suite's ``certify:``) the soundness check runs first (a failure raises
    :class:`~bench.rundir.RunError`, the cells stay on disk) and the bracket's tables are written too
    (:mod:`bench.engine.bracket`).
    """
    results = pd.concat([o.rows for o in ordered], ignore_index=True)
    samples = pd.concat([o.samples for o in ordered], ignore_index=True)
    if certified:
        results, certified_rows, certified_samples = bracket(results, samples, certified)
        write_certified(run, certified_rows, certified_samples)
    results = select_columns(results, RESULT_COLUMNS, OPTIONAL_RESULT_COLUMNS)
    samples = select_columns(samples, SAMPLE_COLUMNS, OPTIONAL_SAMPLE_COLUMNS)
    atomic_write_text(run.results_csv, results.to_csv(index=False))
    atomic_write_parquet(results, run.results_parquet)
    atomic_write_parquet(samples, run.samples)
    return results


def finish_manifest(
    run: RunDir,
    manifest: dict[str, Any],
    ordered: list[CellOutcome],
    model_info: dict[str, Any],
    *,
    wall: float,
    prep_seconds: float,
    backend: str,
    scheduler: str | None,
    workers: dict[str, Any] | None = None,
) -> None:
    """The manifest once results are on disk: ``incomplete`` (figures and report to come), the results' sha256,
    timings per cell and clean accuracy per model (``wall``: perf_counter start). :func:`mark_finished` follows."""
    manifest.pop("error", None)
    manifest.update(
        status="incomplete",
        results_sha256=results_sha256(run),
        finished=_dt.datetime.now(_dt.UTC).isoformat(),
        wall_seconds=time.perf_counter() - wall,
        prepare_seconds=prep_seconds,
        attack_seconds=sum(o.attack_seconds for o in ordered),
        cell_seconds={o.cell_id: o.seconds for o in ordered},
        backend=backend,
        scheduler=scheduler,
        workers=workers,
        cell_extras={o.cell_id: o.extras for o in ordered if o.extras},
        clean_accuracy={k: v["clean_accuracy"] for k, v in model_info.items()},
        # each model's weights digest and whether they are the zoo's reference weights (model_zoo/reference.py)
        weights={
            k: {"sha256": v.get("weights_sha256"), "kind": v.get("weights"), "note": v.get("weights_note", "")}
            for k, v in model_info.items()
        },
    )
    write_json(run.manifest, manifest)


def draw_figures(results: pd.DataFrame) -> drawing.Pending[dict[str, bytes]]:
    """Start drawing one robust-accuracy curve per attack (a line per model): on the drawing process
    when one runs (:mod:`reports.drawing`), so that the cross-check and the report go on meanwhile."""
    return drawing.submit(attack_curves, results)


def write_figures(run: RunDir, curves: drawing.Pending[dict[str, bytes]]) -> None:
    """The curves of :func:`draw_figures` as ``figures/curve_<attack>.png`` (the report reuses them too)."""
    run.figures.mkdir(exist_ok=True)
    for attack, png in curves.result().items():
        (run.figures / f"curve_{safe_filename(attack)}.png").write_bytes(png)


def write_crosscheck_table(
    run: RunDir, suite: Suite, refs: dict[str, ModelRef], data: DataSplit, device: torch.device, echo: Echo
) -> None:
    """``crosscheck.csv``/``.json``: the suite's native attacks vs ART on its models (100 samples, one eps each)."""
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


def write_report(run: RunDir, curves: drawing.Pending[dict[str, bytes]] | None = None) -> None:
    """Render ``report/report.html`` and ``report.md`` (logged to MLflow with the run).

    ``curves``: the per-attack curves of :func:`draw_figures`, reused as they are (waited for when the
    report comes to them).
    """
    render_run_dir(run.root, drawn_curves=curves)


def completing(run: RunDir, manifest: dict[str, Any], phase: str, step: Callable[[], object]) -> None:
    """Run one phase after the results (figures, cross-check, report); if it fails, the manifest stays
    ``incomplete`` with the ``error`` and :class:`~bench.runstate.RunIncomplete` (exit 1) says how to complete it."""
    try:
        step()
    except Exception as exc:  # the results are on disk already: whatever broke here, say so and how to finish
        reason = f"{phase}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:500]
        manifest["error"] = reason
        with contextlib.suppress(OSError):  # a full disk may refuse this too: the manifest then stays as it was
            write_json(run.manifest, manifest)
        raise RunIncomplete(
            f"{run.root}: the results are on disk, but the run is incomplete: writing the {reason}; "
            f"complete it with: {resume_hint(run)}"
        ) from exc


def mark_finished(run: RunDir, manifest: dict[str, Any]) -> None:
    """``status: finished``: results, figures and report all exist (written last, after all of them)."""
    done = {k: v for k, v in manifest.items() if k != "error"}
    done.update(status="finished", completed=_dt.datetime.now(_dt.UTC).isoformat())
    write_json(run.manifest, done)  # only once this is on disk does the outcome's manifest say so too
    manifest.clear()
    manifest.update(done)


def mirror_to_mlflow(outcome: RunOutcome) -> None:
    """Mirror the run directory into MLflow; on failure warn (:class:`TrackingWarning`) with the retry command."""
    run = outcome.run_dir
    try:
        outcome.mlflow_run_id = sync_run_dir(run.root)
    except TrackingUnavailable as exc:
        outcome.tracking_warning = (
            f"MLflow tracking failed ({exc}); the results are safe in {run.root}. "
            f"Mirror them later with: bench sync {run.root}"
        )
        warnings.warn(outcome.tracking_warning, TrackingWarning, stacklevel=3)
