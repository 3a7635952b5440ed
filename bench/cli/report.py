"""``bench report``: HTML + Markdown report of one or more runs, from run directories or MLflow."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from bench.cli import app, console, err, user_errors

if TYPE_CHECKING:
    from reports.sources import RunData


@app.command()
@user_errors
def report(
    run_dirs: Annotated[
        list[Path] | None, typer.Argument(help="run directories; with several, the first is the baseline")
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="output folder for report.html, report.md, figures/")] = Path(
        "reports/out"
    ),
    experiment: Annotated[
        str | None, typer.Option("--experiment", help="MLflow experiment: report its latest run(s)")
    ] = None,
    last: Annotated[
        int, typer.Option("--last", min=1, help="with --experiment: compare the N latest runs (oldest = baseline)")
    ] = 1,
    runs: Annotated[
        list[str] | None, typer.Option("--runs", help="MLflow parent run id (repeat; the first is the baseline)")
    ] = None,
    eps: Annotated[str | None, typer.Option("--eps", help="eps of the heatmap (number or k/255)")] = None,
    title: Annotated[str | None, typer.Option("--title", help="report title")] = None,
    alpha: Annotated[
        float, typer.Option("--alpha", min=0.0, max=1.0, help="significance level of run comparisons")
    ] = 0.05,
) -> None:
    """Render a self-contained report.html and a report.md (figures in figures/) from runs."""
    from bench.types import EpsilonError, parse_eps
    from reports.render import render_report
    from reports.sources import ReportError, load_run

    given = [name for name, value in (("RUN_DIR", run_dirs), ("--experiment", experiment), ("--runs", runs)) if value]
    if len(given) != 1:
        err.print(
            "[bold red]error:[/] give exactly one source: RUN_DIR..., --experiment NAME or --runs ID..."
            + (f" (got {', '.join(given)})" if given else ""),
            highlight=False,
        )
        raise typer.Exit(2)
    try:
        heatmap_eps = parse_eps(eps) if eps is not None else None
    except EpsilonError as exc:
        err.print(f"[bold red]error:[/] --eps: {exc}", highlight=False)
        raise typer.Exit(2) from None
    try:
        if run_dirs:
            paths = render_report([load_run(p) for p in run_dirs], out, eps=heatmap_eps, title=title, alpha=alpha)
        else:
            with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
                loaded = _from_mlflow(experiment, last, runs or [], Path(tmp))
                paths = render_report(loaded, out, eps=heatmap_eps, title=title, alpha=alpha)
    except ReportError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    console.print(f"report: {paths.html}")
    console.print(f"markdown: {paths.markdown} (figures in {paths.figures})")


def _from_mlflow(experiment: str | None, last: int, run_ids: list[str], tmp: Path) -> list[RunData]:
    """Download the named parent runs (or the experiment's latest) into ``tmp``; MLflow down -> exit 1."""

    import mlflow
    import requests
    from mlflow.exceptions import MlflowException

    from bench.tracking import fail_fast, tracking_uri
    from reports.sources import download_mlflow_run, experiment_run_ids

    fail_fast()
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        ids = experiment_run_ids(experiment, last=last) if experiment else run_ids
        return [download_mlflow_run(run_id, tmp / f"run{i}") for i, run_id in enumerate(ids, 1)]
    except (MlflowException, requests.RequestException, ConnectionError) as exc:
        err.print(f"[bold red]error:[/] MLflow at {uri}: {type(exc).__name__}: {str(exc)[:300]}", highlight=False)
        raise typer.Exit(1) from None
