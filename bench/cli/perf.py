"""``bench perf``: time the attacks against the hardware bound and against ART, log the ratios to MLflow."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from bench.cli.common import app, console, err, user_errors
from bench.data import DATASETS
from bench.perf import QUICKSTART, PerfConfig, run_perf
from bench.registry import RegistryError
from bench.tracking import log_perf_run, tracking_uri
from model_zoo import MODELS


@app.command("perf")
@user_errors
def perf_command(
    model: Annotated[list[str] | None, typer.Option("--model", help="zoo model (repeat; lenet, mlp)")] = None,
    data: Annotated[str, typer.Option("--data", help="data set the models are trained on")] = "mnist5k",
    split: Annotated[str, typer.Option("--split", help="train or test")] = "test",
    n: Annotated[int | None, typer.Option("--n", min=1, help="inputs (default 10000; 128 with --quick)")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="batch size of every call")] = 500,
    repeats: Annotated[int | None, typer.Option("--repeats", min=1, help="timed runs, median kept (3)")] = None,
    threads: Annotated[int | None, typer.Option("--threads", min=1, help="torch threads (all cores)")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="write every measurement here")] = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="reduced mode for CI: small n, 1 repeat, a reduced harness suite")
    ] = False,
    suite: Annotated[
        Path | None, typer.Option("--suite", help="suite timed for the harness overhead (default quickstart)")
    ] = None,
    no_harness: Annotated[bool, typer.Option("--no-harness", help="skip the harness-overhead run (P4)")] = False,
    no_mlflow: Annotated[bool, typer.Option("--no-mlflow", help="do not log to the MLflow 'perf' experiment")] = False,
) -> None:
    """Measure forward/backward bounds, native FGSM/PGD sweeps and ART's loops in one process; print the ratios."""
    models = tuple(model or ("lenet", "mlp"))
    for name in models:
        if name not in MODELS:
            raise RegistryError(f"--model: {MODELS.unknown_message(name)}")
    if data not in DATASETS:
        raise RegistryError(f"--data: {DATASETS.unknown_message(data)}")
    if split not in ("train", "test"):
        raise typer.BadParameter(f"--split: {split!r} is not allowed (allowed: train, test)")
    harness = None if no_harness else (suite or QUICKSTART)
    if harness is not None and not harness.is_file():
        raise FileNotFoundError(f"--suite: file {harness} not found")
    kwargs = {"threads": threads} if threads else {}
    cfg = PerfConfig(
        models=models,
        data=data,
        split=split,
        n=n or (128 if quick else 10_000),
        batch_size=batch_size,
        repeats=repeats or (1 if quick else 3),
        harness_suite=harness,
        harness_override=quick,
        harness_n=min(n or 64, 64),
        **kwargs,
    )
    doc = run_perf(cfg, echo=err.print)
    _print(doc)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(doc, indent=2) + "\n")
        console.print(f"measurements: {json_path}")
    if not no_mlflow:
        run_id = log_perf_run(doc)
        console.print(f"MLflow run {run_id} in experiment 'perf' at {tracking_uri()}")


def _print(doc: dict) -> None:
    cfg = doc["config"]
    for name, m in doc["models"].items():
        table = Table(title=f"{name}: {cfg['n']} inputs, batch {cfg['batch_size']}, {cfg['threads']} threads")
        table.add_column("measurement")
        table.add_column("seconds (median)", justify="right")
        table.add_column("grad evals", justify="right")
        for key, seconds in m["times"].items():
            evals = m["grad_evals"].get(key)
            table.add_row(key, f"{seconds:.3f}", "" if evals is None else str(evals))
        for key, ratio in m["ratios"].items():
            table.add_row(key, f"{ratio:.3f}x (fastest runs: {m['best_ratios'][key]:.3f}x)", "")
        console.print(table)
    if doc["harness"] is not None:
        h = doc["harness"]
        table = Table(title=f"harness: {h['suite']} ({h['n']} samples, {h['cells']} cells)")
        table.add_column("part")
        table.add_column("seconds", justify="right")
        for key in (
            "wall_seconds",
            "prepare_seconds",
            "attack_seconds",
            "clean_seconds",
            "cell_seconds",
            "after_results_seconds",
            "figures_seconds",
            "report_seconds",
            "crosscheck_and_rest_seconds",
            "overhead_seconds",
        ):
            table.add_row(key.removesuffix("_seconds"), f"{h[key]:.2f}")
        table.add_row("overhead fraction", f"{h['overhead_fraction']:.3f}")
        table.add_row("peak memory (GiB)", f"{h['peak_rss_bytes'] / 2**30:.2f}")
        console.print(table)
    table = Table(title="targets")
    for column in ("id", "model", "ratio", "target", "median", "fastest", ""):
        table.add_column(column)
    for t in doc["targets"]:
        verdict = "[green]pass[/]" if t["passed"] else "[bold red]FAIL[/]"
        measured, best = f"{t['measured']:.3f}", f"{t['measured_best']:.3f}"
        table.add_row(t["id"], t["model"], t["what"], t["target"], measured, best, verdict)
    console.print(table)
