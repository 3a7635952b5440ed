"""``bench run``: evaluate a suite into a run directory, mirror it to MLflow, print the robust-accuracy table."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from bench.attacks import AttackError
from bench.cli.app import app, console, err, user_errors
from bench.data import DataError
from bench.engine import TrackingWarning, run_suite
from bench.rundir import RunError
from bench.stats import curve_auc
from bench.suite import load_suite
from bench.tracking import tracking_uri
from bench.types import eps_label
from model_zoo import CheckpointError


def summary_table(results: Any, *, title: str) -> Table:
    """Robust accuracy per (model, attack) and eps, clean accuracy and curve AUC."""
    eps_values = sorted(results["eps"].unique())
    table = Table(title=title, show_lines=False)
    table.add_column("model")
    table.add_column("attack")
    table.add_column("clean", justify="right")
    for eps in eps_values:
        table.add_column(f"eps {eps_label(eps)}", justify="right")
    table.add_column("AUC", justify="right")
    for (model, attack), rows in results.groupby(["model", "attack"], sort=False):
        by_eps = dict(zip(rows["eps"], rows["robust_accuracy"], strict=True))
        cells = [f"{by_eps[e]:.3f}" if e in by_eps else "" for e in eps_values]
        auc = curve_auc(rows["eps"], rows["robust_accuracy"])
        table.add_row(str(model), str(attack), f"{rows['clean_accuracy'].iloc[0]:.3f}", *cells, f"{auc:.3f}")
    return table


@contextlib.contextmanager
def _naming_suite(suite: Path, kinds: tuple[type[Exception], ...]) -> Iterator[None]:
    """Prefix errors found while running (data, models, epsilons) with the suite file they come from."""
    try:
        yield
    except kinds as exc:
        raise RunError(f"{suite}: {exc}") from None


@app.command()
@user_errors
def run(
    suite: Annotated[Path, typer.Argument(help="suite YAML file")],
    out: Annotated[Path | None, typer.Option("--out", help="run directory (exactly this path)")] = None,
    n_jobs: Annotated[int | None, typer.Option("--n-jobs", help="parallel cells (joblib); -1 = all cores")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="evaluate only the first N samples")] = None,
    no_mlflow: Annotated[bool, typer.Option("--no-mlflow", help="do not mirror the run into MLflow")] = False,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu or cuda (overrides the suite)")] = None,
    resume: Annotated[
        Path | None, typer.Option("--resume", help="continue an interrupted run in this run directory")
    ] = None,
    backend: Annotated[
        str | None, typer.Option("--backend", help="joblib backend of the cells: loky (default), threading or dask")
    ] = None,
    scheduler: Annotated[
        str | None, typer.Option("--scheduler", help="dask.distributed scheduler address (with --backend dask)")
    ] = None,
) -> None:
    """Run a suite: evaluate every model x attack x eps, write the run directory, log to MLflow."""
    spec = load_suite(suite)
    if resume is not None:
        if out is not None and out != resume:
            raise typer.BadParameter("--out and --resume name different folders; give one of them")
        out = resume
    with warnings.catch_warnings(), _naming_suite(suite, (RunError, DataError, CheckpointError, AttackError)):
        warnings.simplefilter("ignore", TrackingWarning)  # printed below, once, as a warning line
        outcome = run_suite(
            spec,
            out=out,
            n_jobs=n_jobs,
            limit=limit,
            track=False if no_mlflow else None,
            device=device,
            echo=err.print,
            resume=resume is not None,
            backend=backend,
            scheduler=scheduler,
        )
    console.print(
        summary_table(outcome.results, title=f"robust accuracy: {spec.name} ({outcome.manifest['data']['n']} samples)")
    )
    console.print(f"run directory: {outcome.run_dir.root}")
    if outcome.mlflow_run_id:
        console.print(f"MLflow parent run: {outcome.mlflow_run_id} at {tracking_uri()} (review with: mlflow ui)")
    if outcome.tracking_warning:
        err.print(f"[yellow]warning:[/] {outcome.tracking_warning}", highlight=False)
