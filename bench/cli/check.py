"""``bench baseline`` and ``bench check``: the robustness regression gate (bench/gate/).

Exit codes of ``bench check``: 0 pass, 1 a regression, a floor not met or a
change (per-sample results that must be identical, with the same weights, are
not), 2 bad usage, configuration or baseline (the message names the file and field).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.table import Table

from bench.cli.common import app, console, err, fail, user_errors
from bench.gate.baseline import Baseline, baseline_from_run, read_baseline, write_baseline
from bench.gate.compare import CheckConfigError, CheckReport, Settings, compare
from bench.gate.render import markdown, weights_lines, write_junit
from bench.rundir import RunDir, atomic_write_text, open_run_dir
from bench.runtrust import check_run, edited_banner
from bench.suite import GateRule, MaxDrop, parse_floor, parse_rules, read_yaml
from bench.tracking import fetch_baseline_run, publish_baseline, resolve_alias

STATUS_STYLE = {
    "ok": "green",
    "improved": "cyan",
    "new": "yellow",
    "regressed": "bold red",
    "below floor": "bold red",
    "changed": "bold red",
}


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
            help="also name it: experiment tag bench.baseline.NAME = run id (implies --mlflow)",
        ),
    ] = None,
    trust_edited: Annotated[bool, typer.Option("--trust-edited", help=TRUST_EDITED_HELP)] = False,
) -> None:
    """Freeze a run directory into a baseline for `bench check` (file and/or MLflow)."""
    if output is None and not mlflow and mlflow_alias is None:
        raise fail("say where the baseline goes: -o FILE, --mlflow or --mlflow-alias NAME")
    _believed(open_run_dir(run_dir), trust_edited)
    baseline = baseline_from_run(run_dir, with_flags=not no_flags)
    if output is not None:
        write_baseline(baseline, output)
        console.print(f"baseline of {run_dir} ({len(baseline.cells)} cells, n={baseline.data.n}) -> {output}")
    if mlflow or mlflow_alias is not None:
        run_id = publish_baseline(run_dir, baseline, alias=mlflow_alias)
        named = f", alias {mlflow_alias!r}" if mlflow_alias else ""
        console.print(f"baseline logged to MLflow run {run_id}{named}")


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
        typer.Option(
            "--floor",
            help=(
                "absolute floor MODEL/ATTACK@EPS>=MIN, MODEL/ATTACK:auc>=MIN or MODEL/CERTIFIER@EPS:certified>=MIN "
                "(repeatable)"
            ),
        ),
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
    trust_edited: Annotated[bool, typer.Option("--trust-edited", help=TRUST_EDITED_HELP)] = False,
) -> None:
    """Compare a run with a baseline and rules; exit 0 pass, 1 regression or change, 2 bad usage/config/baseline."""
    sources = [s for s in (baseline, baseline_run, baseline_alias) if s is not None]
    if len(sources) > 1:
        raise fail("give at most one of --baseline, --baseline-run, --baseline-alias")
    if correction not in ("holm", "none"):
        raise fail(f"--correction: {correction!r} is not allowed (allowed: holm, none)")
    run = open_run_dir(run_dir)
    edited = _believed(run, trust_edited)
    suite_raw = read_yaml(run.suite) or {}
    rules = _rules(run.suite, suite_raw, floor or [], max_drop, max_auc_drop)
    settings = Settings(
        alpha=alpha, correction=_correction(correction), mid_p=not exact, allow_other_data=allow_other_data
    )
    current = baseline_from_run(run)
    reference, source = _reference(baseline, baseline_run, baseline_alias, suite_raw)
    if reference is None and not rules:
        raise CheckConfigError(
            "nothing to check: give a baseline (--baseline, --baseline-run, --baseline-alias) or floors "
            "(--floor, or 'checks:' in the suite)"
        )
    report = compare(current, reference, rules, settings=settings, baseline_source=source or "baseline")

    for note in report.notes:
        err.print(f"[yellow]note:[/] {note}", highlight=False)
    for line in weights_lines(report):
        console.print(f"weights {line}", highlight=False, markup=False)
    console.print(_table(report))
    style = "bold green" if report.passed else "bold red"
    console.print(f"[{style}]{report.verdict}[/] ({len(report.items)} items checked)", highlight=False)
    if markdown_path is not None:
        atomic_write_text(markdown_path, (edited_banner(edited) if edited else "") + markdown(report))
        console.print(f"Markdown summary: {markdown_path}")
    if junit_path is not None:
        write_junit(report, junit_path)
        console.print(f"JUnit XML: {junit_path}")
    raise typer.Exit(report.exit_code)


TRUST_EDITED_HELP = (
    "use a run whose results were changed after it ran (their sha256 differs from the manifest's); "
    "said on the first line of the output"
)


def _believed(run: RunDir, trust_edited: bool) -> str | None:
    """Check the run's digests and values (bench.runtrust); say so when an edited run is used on purpose."""
    edited = check_run(run, trust_edited=trust_edited)
    if edited:
        err.print(f"warning: EDITED RUN: {edited} (used because of --trust-edited)", highlight=False, markup=False)
    return edited


def _correction(value: str) -> Literal["holm", "none"]:
    return "holm" if value == "holm" else "none"


def _reference(
    path: Path | None, run_id: str | None, alias: str | None, suite_raw: dict[str, object]
) -> tuple[Baseline | None, str | None]:
    """The baseline named on the command line (a file, an MLflow run or an alias) and how to name it."""
    if path is not None:
        return read_baseline(path), str(path)
    if run_id is not None:
        return fetch_baseline_run(run_id), f"MLflow run {run_id}"
    if alias is not None:
        tracking = suite_raw.get("tracking")
        experiment = (tracking.get("experiment") if isinstance(tracking, dict) else None) or suite_raw.get("name", "")
        aliased = resolve_alias(alias, str(experiment))
        return fetch_baseline_run(aliased), f"MLflow alias {alias!r} (run {aliased})"
    return None, None


def _rules(
    suite_path: Path,
    suite_raw: dict[str, object],
    floors: list[str],
    max_drop: float | None,
    max_auc_drop: float | None,
) -> list[tuple[str, GateRule]]:
    """Suite rules first, then command-line rules (the last matching tolerance wins)."""
    rules: list[tuple[str, GateRule]] = []
    parsed = parse_rules(suite_raw.get("checks"), source=str(suite_path))
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
