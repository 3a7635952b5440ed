"""``bench baseline`` and ``bench check``: the robustness regression gate (bench/check.py).

Exit codes of ``bench check``: 0 pass, 1 a regression or a floor not met, 2 bad
usage, configuration or baseline (the message names the file and field).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.table import Table

from bench.cli import app, console, err, user_errors

if TYPE_CHECKING:
    from bench.gate.compare import CheckReport, Floor, MaxDrop

STATUS_STYLE = {"ok": "green", "improved": "cyan", "new": "yellow", "regressed": "bold red", "below floor": "bold red"}


def _fail(message: str) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False, markup=True)
    return typer.Exit(2)


@app.command("baseline")
@user_errors
def baseline_command(
    run_dir: Annotated[Path, typer.Argument(help="a finished run directory")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="write the baseline JSON here")] = None,
    no_flags: Annotated[
        bool, typer.Option("--no-flags", help="leave out per-sample flags (smaller; checks become unpaired)")
    ] = False,
    mlflow: Annotated[
        bool, typer.Option("--mlflow", help="log the baseline as an artifact of the run's MLflow parent run")
    ] = False,
    mlflow_alias: Annotated[
        str | None,
        typer.Option(
            "--mlflow-alias",
            help="also name it: experiment tag bench.gate.baseline.NAME = run id (implies --mlflow)",
        ),
    ] = None,
) -> None:
    """Freeze a run directory into a baseline for `bench check` (file and/or MLflow)."""
    from bench.gate.baseline import BaselineError, baseline_from_run, publish_baseline, write_baseline
    from bench.tracking import TrackingUnavailable

    if output is None and not mlflow and mlflow_alias is None:
        raise _fail("say where the baseline goes: -o FILE, --mlflow or --mlflow-alias NAME")
    try:
        baseline = baseline_from_run(run_dir, with_flags=not no_flags)
        if output is not None:
            write_baseline(baseline, output)
            console.print(f"baseline of {run_dir} ({len(baseline.cells)} cells, n={baseline.data.n}) -> {output}")
        if mlflow or mlflow_alias is not None:
            run_id = publish_baseline(run_dir, baseline, alias=mlflow_alias)
            named = f", alias {mlflow_alias!r}" if mlflow_alias else ""
            console.print(f"baseline logged to MLflow run {run_id}{named}")
    except (BaselineError, TrackingUnavailable) as exc:
        raise _fail(str(exc)) from None


@app.command("check")
@user_errors
def check_command(
    run_dir: Annotated[Path, typer.Argument(help="the finished run directory to check")],
    baseline: Annotated[Path | None, typer.Option("--baseline", help="baseline JSON file")] = None,
    baseline_run: Annotated[
        str | None, typer.Option("--baseline-run", help="MLflow run id holding a baseline artifact")
    ] = None,
    baseline_alias: Annotated[
        str | None, typer.Option("--baseline-alias", help="baseline alias in the suite's MLflow experiment")
    ] = None,
    floor: Annotated[
        list[str] | None,
        typer.Option("--floor", help="absolute floor MODEL/ATTACK@EPS>=MIN or MODEL/ATTACK:auc>=MIN (repeatable)"),
    ] = None,
    max_drop: Annotated[
        float | None, typer.Option("--max-drop", help="tolerated robust-accuracy drop per cell and eps (default 0.02)")
    ] = None,
    max_auc_drop: Annotated[
        float | None, typer.Option("--max-auc-drop", help="tolerated drop of a cell's curve AUC (default 0.02)")
    ] = None,
    alpha: Annotated[float, typer.Option("--alpha", help="significance level of the one-sided tests")] = 0.05,
    correction: Annotated[str, typer.Option("--correction", help="holm (family-wise over all items) or none")] = "holm",
    exact: Annotated[bool, typer.Option("--exact", help="exact McNemar test instead of mid-p")] = False,
    allow_other_data: Annotated[
        bool, typer.Option("--allow-other-data", help="compare runs on different samples with unpaired tests")
    ] = False,
    markdown_path: Annotated[Path | None, typer.Option("--markdown", help="write a Markdown summary here")] = None,
    junit_path: Annotated[Path | None, typer.Option("--junit", help="write JUnit XML here (one case per item)")] = None,
) -> None:
    """Compare a run with a baseline and rules; exit 0 pass, 1 regression, 2 bad usage/config/baseline."""
    from bench.gate import compare as gate
    from bench.gate.baseline import BaselineError, baseline_from_run, fetch_baseline_run, read_baseline, resolve_alias
    from bench.rundir import open_run_dir
    from bench.suite import read_yaml

    sources = [s for s in (baseline, baseline_run, baseline_alias) if s is not None]
    if len(sources) > 1:
        raise _fail("give at most one of --baseline, --baseline-run, --baseline-alias")
    if correction not in ("holm", "none"):
        raise _fail(f"--correction: {correction!r} is not allowed (allowed: holm, none)")
    try:
        run = open_run_dir(run_dir)
        suite_raw = read_yaml(run.suite) or {}
        rules = _rules(run.suite, suite_raw, floor or [], max_drop, max_auc_drop)
        settings = gate.Settings(
            alpha=alpha,
            correction=_correction(correction),
            mid_p=not exact,
            allow_other_data=allow_other_data,
        )
        current = baseline_from_run(run)
        reference, source = None, None
        if baseline is not None:
            reference, source = read_baseline(baseline), str(baseline)
        elif baseline_run is not None:
            reference, source = fetch_baseline_run(baseline_run), f"MLflow run {baseline_run}"
        elif baseline_alias is not None:
            experiment = (suite_raw.get("tracking") or {}).get("experiment") or suite_raw.get("name", "")
            run_id = resolve_alias(baseline_alias, experiment)
            reference, source = fetch_baseline_run(run_id), f"MLflow alias {baseline_alias!r} (run {run_id})"
        if reference is None and not rules:
            raise gate.CheckConfigError(
                "nothing to check: give a baseline (--baseline, --baseline-run, --baseline-alias) or floors "
                "(--floor, or 'checks:' in the suite)"
            )
        report = gate.compare(current, reference, rules, settings=settings, baseline_source=source or "baseline")
    except (BaselineError, gate.CheckConfigError) as exc:
        raise _fail(str(exc)) from None

    for note in report.notes:
        err.print(f"[yellow]note:[/] {note}", highlight=False)
    console.print(_table(report))
    style = "bold green" if report.passed else "bold red"
    console.print(f"[{style}]{report.verdict}[/] ({len(report.items)} items checked)", highlight=False)
    if markdown_path is not None:
        from bench.rundir import atomic_write_text

        atomic_write_text(markdown_path, gate.markdown(report))
        console.print(f"Markdown summary: {markdown_path}")
    if junit_path is not None:
        gate.write_junit(report, junit_path)
        console.print(f"JUnit XML: {junit_path}")
    raise typer.Exit(report.exit_code)


def _correction(value: str) -> Literal["holm", "none"]:
    return "holm" if value == "holm" else "none"


def _rules(
    suite_path: Path,
    suite_raw: dict[str, object],
    floors: list[str],
    max_drop: float | None,
    max_auc_drop: float | None,
) -> list[tuple[str, Floor | MaxDrop]]:
    """Suite rules first, then command-line rules (the last matching tolerance wins)."""
    from pydantic import ValidationError

    from bench.gate.compare import RULES, CheckConfigError, MaxDrop, parse_floor

    rules: list[tuple[str, Floor | MaxDrop]] = []
    try:
        parsed = RULES.validate_python(suite_raw.get("checks") or [])
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"])
        raise CheckConfigError(f"{suite_path}: checks{loc}: {first['msg'].removeprefix('Value error, ')}") from None
    rules += [(f"{suite_path}: checks[{i}]", rule) for i, rule in enumerate(parsed)]
    rules += [(f"--floor {text!r}", parse_floor(text)) for text in floors]
    for option, value, metric in (("--max-drop", max_drop, "robust_accuracy"), ("--max-auc-drop", max_auc_drop, "auc")):
        if value is not None:
            if not 0.0 <= value <= 1.0:
                raise CheckConfigError(f"{option}: {value} is outside [0, 1] (accuracy units)")
            rules.append((f"{option} {value}", MaxDrop.model_validate({"max_drop": value, "metric": metric})))
    return rules


def _table(report: CheckReport) -> Table:
    table = Table(title=f"bench check: {report.suite} vs {report.baseline_source or 'floors only'}")
    columns: tuple[tuple[str, Literal["left", "right"]], ...] = (
        ("model", "left"),
        ("attack", "left"),
        ("point", "left"),
        ("baseline", "right"),
        ("current [95% CI]", "right"),
        ("change", "right"),
        ("tol", "right"),
        ("p adj", "right"),
        ("test", "left"),
        ("status", "left"),
        ("note", "left"),
    )
    for name, justify in columns:
        table.add_column(name, justify=justify)
    for item in report.items:
        ci = f" [{item.current_ci[0]:.3f}, {item.current_ci[1]:.3f}]" if item.current_ci else ""
        table.add_row(
            item.model,
            item.attack,
            item.name,
            "" if item.baseline is None else f"{item.baseline:.3f}",
            f"{item.current:.3f}{ci}",
            "" if item.change is None else f"{item.change:+.3f}",
            "" if item.tolerance is None else f"{item.tolerance:g}",
            "" if item.p_drop_adjusted is None else f"{item.p_drop_adjusted:.2g}",
            item.test,
            f"[{STATUS_STYLE[item.status]}]{item.status}[/]",
            item.note,
        )
    return table
