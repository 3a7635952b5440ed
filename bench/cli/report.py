"""``bench report``: HTML + Markdown report of one or more runs, from run directories or MLflow."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer

from bench.cli.common import app, console, err, fail, user_errors
from bench.tracking import download_runs
from bench.types import EpsilonError, parse_eps
from reports.render import render_report
from reports.sources import RunData, load_run


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
    trust_edited: Annotated[
        bool,
        typer.Option(
            "--trust-edited",
            help="render runs whose results were changed after the run (their sha256 differs from the manifest's); "
            "the report says so on its first line",
        ),
    ] = False,
) -> None:
    """Render a self-contained report.html and a report.md (figures in figures/) from runs."""
    given = [name for name, value in (("RUN_DIR", run_dirs), ("--experiment", experiment), ("--runs", runs)) if value]
    if len(given) != 1:
        raise fail(
            "give exactly one source: RUN_DIR..., --experiment NAME or --runs ID..."
            + (f" (got {', '.join(given)})" if given else "")
        )
    try:
        heatmap_eps = parse_eps(eps) if eps is not None else None
    except EpsilonError as exc:
        raise fail(f"--eps: {exc}") from None
    if run_dirs:
        loaded = [load_run(p, trust_edited=trust_edited) for p in run_dirs]
        _say_edited(loaded)
        paths = render_report(loaded, out, eps=heatmap_eps, title=title, alpha=alpha)
    else:  # MLflow parent runs, downloaded like run directories (bench.tracking), then rendered alike
        with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
            loaded = download_runs(runs or [], Path(tmp), experiment=experiment, last=last, trust_edited=trust_edited)
            _say_edited(loaded)
            paths = render_report(loaded, out, eps=heatmap_eps, title=title, alpha=alpha)
    console.print(f"report: {paths.html}")
    console.print(f"markdown: {paths.markdown} (figures in {paths.figures})")


def _say_edited(runs: list[RunData]) -> None:
    for run in runs:
        if run.edited:
            err.print(f"warning: EDITED RUN {run.label}: {run.edited}", markup=False, highlight=False)
