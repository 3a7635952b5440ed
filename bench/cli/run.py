"""``bench run``: evaluate a suite into a run directory, mirror it to MLflow, print the robust-accuracy table."""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from bench import progress
from bench.attacks import AttackError
from bench.cli import overrides
from bench.cli.common import app, console, err, user_errors
from bench.cli.validate import TRUST_HELP
from bench.data import DataError
from bench.engine import TrackingWarning, run_suite
from bench.rundir import RunError
from bench.stats import curve_auc
from bench.suite import Suite, load_raw, validate
from bench.tracking import review_links, tracking_uri
from bench.types import eps_label
from model_zoo import CheckpointError
from reports.tables import leaderboard
from reports.views import unbounded_rows


def _fmt(value: float, narrow: bool) -> str:
    if value != value:  # nan: not on this grid
        return "-"
    return f"{value:.2f}" if narrow else f"{value:.3f}"


def _table(narrow: bool) -> Table:
    return Table(box=None if narrow else box.SIMPLE_HEAD, pad_edge=False)


def _print_table(title: str, table: Table) -> None:
    """The title on its own line: a table title would wrap to the width of a narrow table."""
    console.print(f"\n{title}", highlight=False, soft_wrap=True)
    console.print(table)


def leaderboard_table(board: Any, *, narrow: bool = False) -> tuple[str, Table]:
    """One row per model, best first: clean accuracy, worst case over attacks at each norm's reference eps, AUC."""
    ref = board.attrs.get("reference_eps", {})
    title = (
        "leaderboard (worst case over attacks, or the reliable preset where a model ran it; "
        "AUC over the norm's reference range, * = partial):"
    )
    table = _table(narrow)
    table.add_column("model", no_wrap=True)
    table.add_column("clean", justify="right")
    certified = board.attrs.get("certified", [])
    for norm, eps in ref.items():
        table.add_column(f"{norm} @{eps_label(eps)}", justify="right")
        table.add_column(f"AUC {norm}", justify="right")
        if norm in certified:
            table.add_column(f"certified {norm} @{eps_label(eps)}", justify="right")
            table.add_column("gap", justify="right")
    for _, row in board.iterrows():
        cells = [str(row["model"]), _fmt(row["clean_accuracy"], narrow)]
        for norm in ref:
            partial = "*" if row[f"auc_{norm}_partial"] else ""
            cells += [_fmt(row[f"robust_{norm}"], narrow), _fmt(row[f"auc_{norm}"], narrow) + partial]
            if norm in certified:
                cells += [_fmt(row[f"certified_{norm}"], narrow), _fmt(row[f"gap_{norm}"], narrow)]
        table.add_row(*cells)
    if certified:
        title = (
            title[:-2] + "; certified: the best bound certificate, the bracket's lower side; gap = robust - certified):"
        )
    return title, table


def norm_tables(results: Any, *, title: str, narrow: bool = False) -> list[tuple[str, Table]]:
    """Robust accuracy per (model, attack) and eps, one table per norm (only that norm's eps columns)."""
    tables = []
    for norm in [str(n) for n in results["norm"].unique() if str(n) != "none"]:
        rows_of_norm = results[results["norm"] == norm]
        eps_values = sorted(rows_of_norm["eps"].unique())
        table = _table(narrow)
        table.add_column("model", no_wrap=True)
        table.add_column("attack", no_wrap=True)
        table.add_column("clean", justify="right")
        for eps in eps_values:
            table.add_column(eps_label(eps) if narrow else f"eps {eps_label(eps)}", justify="right")
        table.add_column("AUC", justify="right")
        for (model, attack), rows in rows_of_norm.groupby(["model", "attack"], sort=False):
            by_eps = dict(zip(rows["eps"], rows["robust_accuracy"], strict=True))
            cells = [_fmt(by_eps[e], narrow) if e in by_eps else "" for e in eps_values]
            auc = curve_auc(rows["eps"], rows["robust_accuracy"])
            clean = _fmt(rows["clean_accuracy"].iloc[0], narrow)
            table.add_row(str(model), str(attack), clean, *cells, _fmt(auc, narrow))
        tables.append((f"{title}, {norm}:", table))
    return tables


def unbounded_lines(results: Any) -> list[str]:
    """One line per cell of an attack without a budget (fooling images, targeted ascent): what it achieved."""
    return [
        f"{row['model']} x {row['attack']} (unbounded{', targeted' if row['targeted'] else ''}): "
        f"success rate {row['success_rate']:.3f}, robust accuracy {row['robust_accuracy']:.3f}, "
        f"mean Linf {row['mean_linf']:.3f}, mean L2 {row['mean_l2']:.3f} (n={row['n']})"
        for row in unbounded_rows(results)
    ]


def print_summary(results: Any, samples: Any, *, title: str, narrow: bool) -> None:
    """The leaderboard first, then one table per norm, then one line per unbounded attack."""
    board = leaderboard(results, samples)
    if board.attrs.get("reference_eps"):
        _print_table(*leaderboard_table(board, narrow=narrow))
    for titled in norm_tables(results, title=title, narrow=narrow):
        _print_table(*titled)
    for i, line in enumerate(unbounded_lines(results)):
        console.print(("\n" if i == 0 else "") + line, highlight=False, soft_wrap=True)


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
    exact_workers: Annotated[
        bool,
        typer.Option(
            "--exact-workers",
            help="start exactly --n-jobs workers; by default a local CPU run measures one forward+backward "
            "pass per model and runs the cells serially when workers are predicted to be slower",
        ),
    ] = False,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="KEY=VALUE",
            help="override a suite field before validation, e.g. --set dataset.n=200 "
            "--set models.lenet.recipe.epochs=1 (repeatable; values are YAML)",
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress lines (for scripts)")] = False,
    narrow: Annotated[
        bool, typer.Option("--narrow", help="compact tables for CI logs (the default when stdout is not a terminal)")
    ] = False,
    trust: Annotated[list[str] | None, typer.Option("--trust", help=TRUST_HELP, metavar="MODULE")] = None,
    trust_edited: Annotated[
        bool,
        typer.Option(
            "--trust-edited",
            help="with --resume: continue from finished cells whose tables were changed after they ran "
            "(recorded in the manifest; the report says so on its first line)",
        ),
    ] = False,
) -> None:
    """Run a suite: evaluate every model x attack x eps, write the run directory, log to MLflow.

    Progress (cells [done/total], eps steps, training epochs, elapsed time and an estimate of the time left)
    goes to stderr: a live bar on a terminal, plain lines at most every 10 s in a log; --quiet turns it off.

    To re-render the report of a finished run without re-running it: bench report RUN_DIR.
    """
    raw = overrides.apply(load_raw(suite), set_ or [], source=suite)
    spec = validate(raw, source=suite, base=suite.parent, trust=trust or ())
    if trust_edited and resume is None:
        raise typer.BadParameter("--trust-edited: only with --resume (a new run has nothing edited to trust)")
    if resume is not None:
        if out is not None and out != resume:
            raise typer.BadParameter("--out and --resume name different folders; give one of them")
        out = resume
    with (
        warnings.catch_warnings(),
        _naming_suite(suite, (RunError, DataError, CheckpointError, AttackError)),
        progress.active(None if quiet else progress.Progress()),
    ):
        warnings.simplefilter("ignore", TrackingWarning)  # printed below, once, as a warning line
        outcome = run_suite(
            spec,
            out=out,
            n_jobs=n_jobs,
            limit=limit,
            track=False if no_mlflow else None,
            device=device,
            echo=None if quiet else err.print,
            resume=resume is not None,
            backend=backend,
            scheduler=scheduler,
            exact_workers=exact_workers,
            trust_edited=trust_edited,
        )
    for note in outcome.manifest.get("edited") or []:
        err.print(f"warning: EDITED RUN: {note} (resumed from it because of --trust-edited)", markup=False)
    print_summary(
        outcome.results,
        outcome.run_dir.read_samples(),
        title=f"robust accuracy: {spec.name} ({_sample_counts(spec, outcome.manifest['data']['n'])})",
        narrow=narrow or not sys.stdout.isatty(),
    )
    for line in weights_lines(outcome.manifest.get("weights") or {}):
        console.print(line, highlight=False, soft_wrap=True)
    console.print(f"run directory: {outcome.run_dir.root}")
    if outcome.mlflow_run_id:
        command, url = review_links(outcome.mlflow_run_id)
        uri = tracking_uri()
        console.print(f"MLflow parent run: {outcome.mlflow_run_id} at {uri}", soft_wrap=True, highlight=False)
        if command:
            console.print(f"review with: {command}", soft_wrap=True, highlight=False)
        console.print(f"then open: {url}" if command else f"open: {url}", soft_wrap=True, highlight=False)
    if outcome.tracking_warning:
        err.print(f"[yellow]warning:[/] {outcome.tracking_warning}", highlight=False)


def weights_lines(weights: dict[str, Any]) -> list[str]:
    """What the run's models ran on: one line for those on reference weights, one per other model."""
    reference = [f"{m} {w['sha256'][:12]}" for m, w in weights.items() if w.get("kind") == "reference"]
    lines = [f"reference weights: {', '.join(reference)}"] if reference else []
    for model, w in weights.items():
        if w.get("kind") == "retrained":
            lines.append(f"RETRAINED weights: {model} {str(w.get('sha256'))[:12]}: {w.get('note')}")
        elif w.get("kind") == "external":
            lines.append(f"external weights: {model}: {w.get('note')}")
    return lines


def _sample_counts(spec: Suite, n: int) -> str:
    """``"1000 samples"``, naming the attacks limited to fewer (``AttackSpec.n``): ``"1000 samples; reliable: 200"``."""
    fewer = [f"{a.id}: {a.n}" for a in spec.attacks if a.n is not None and a.n < n]
    return f"{n} samples" + "".join(f"; {part}" for part in fewer)
