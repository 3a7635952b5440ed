"""The ``bench`` command line: run | ls | validate | sync (and later report, check, crosscheck, perf).

Errors the user can fix (bad suite, unknown names, unreadable files) print one
clear message to stderr and exit with status 2; no traceback reaches the user.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Callable, Iterator
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="Adversarial robustness benchmark harness: run suites, log them to MLflow, report and gate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Wide when piped (CI logs), so the per-eps table is never truncated.
console = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)

F = TypeVar("F", bound=Callable[..., Any])


def user_errors(fn: F) -> F:
    """Turn the harness' own error types into a one-line message and exit code 2."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from bench.attacks import AttackError
        from bench.data import DataError
        from bench.registry import RegistryError
        from bench.engine.runner import RunError
        from bench.suite import SuiteError
        from model_zoo import CheckpointError

        try:
            return fn(*args, **kwargs)
        except (SuiteError, RunError, RegistryError, DataError, AttackError, CheckpointError, FileNotFoundError) as exc:
            err.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def summary_table(results: Any, *, title: str) -> Table:
    """Robust accuracy per (model, attack) and eps, clean accuracy and curve AUC."""
    from bench.stats import curve_auc
    from bench.types import eps_label

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
    from bench.engine.runner import RunError

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
    from bench.engine.runner import TrackingWarning, run_suite
    from bench.suite import load_suite

    spec = load_suite(suite)
    if resume is not None:
        if out is not None and out != resume:
            raise typer.BadParameter("--out and --resume name different folders; give one of them")
        out = resume
    from bench.attacks import AttackError
    from bench.data import DataError
    from bench.engine.runner import RunError
    from model_zoo import CheckpointError

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
        from bench.tracking import tracking_uri

        console.print(f"MLflow parent run: {outcome.mlflow_run_id} at {tracking_uri()} (review with: mlflow ui)")
    if outcome.tracking_warning:
        err.print(f"[yellow]warning:[/] {outcome.tracking_warning}", highlight=False)


@app.command()
@user_errors
def validate(suites: Annotated[list[Path], typer.Argument(help="suite YAML files")]) -> None:
    """Check suite files without running them (schema, names, attack parameters)."""
    from bench.suite import expand, load_suite

    for path in suites:
        spec = load_suite(path)
        cells = expand(spec)
        console.print(f"{path}: ok ({len(spec.models)} models x {len(spec.attacks)} attacks = {len(cells)} cells)")


@app.command("ls")
def list_registered() -> None:
    """List registered data sets, models and attacks with a one-line description each."""
    from bench.attacks import ATTACKS
    from bench.data import DATASETS
    from model_zoo import MODELS

    for title, registry in (("data sets", DATASETS), ("models", MODELS), ("attacks", ATTACKS)):
        table = Table(title=title, title_justify="left", show_header=False, box=None)
        table.add_column("name", style="bold")
        table.add_column("description")
        for name in registry.names():
            table.add_row(name, registry.describe(name))
        console.print(table)


@app.command()
@user_errors
def sync(run_dir: Annotated[Path, typer.Argument(help="a finished run directory")]) -> None:
    """Mirror a run directory into MLflow (idempotent: a mirrored run is not logged twice)."""
    from bench.tracking import TrackingUnavailable, sync_run_dir, tracking_uri

    try:
        run_id = sync_run_dir(run_dir)
    except TrackingUnavailable as exc:
        err.print(f"[bold red]error:[/] MLflow tracking failed: {exc}", highlight=False)
        raise typer.Exit(1) from None
    console.print(f"{run_dir}: mirrored to MLflow run {run_id} at {tracking_uri()}")


def _load_command_modules() -> None:
    """Import every module of :mod:`bench.cli`; each adds its commands to :data:`app`."""
    import importlib
    import pkgutil

    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        importlib.import_module(f"bench.cli.{info.name}")


_load_command_modules()


def main() -> None:  # pragma: no cover - console script entry
    app(prog_name="bench")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
