"""``bench perf``: time the attacks against the hardware bound and against ART, log the ratios to MLflow."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from bench import limits
from bench.cli.common import app, console, err, user_errors
from bench.data import DATASETS
from bench.perf import (
    ATTACKS_MNIST,
    QUICK_SIZES,
    QUICKSTART,
    SIZES,
    SMALL_MODELS,
    PerfConfig,
    run_perf,
    scaling_figure,
)
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
        Path | None, typer.Option("--suite", help="suite timed for P4 (attacks_mnist; quickstart with --quick)")
    ] = None,
    no_harness: Annotated[bool, typer.Option("--no-harness", help="skip the harness-overhead run (P4)")] = False,
    no_mlflow: Annotated[bool, typer.Option("--no-mlflow", help="do not log to the MLflow 'perf' experiment")] = False,
    scaling: Annotated[
        bool,
        typer.Option("--scaling", help="also time whole runs of n = 1,000 .. 60,000 Fashion-MNIST samples (plotted)"),
    ] = False,
    scaling_n: Annotated[
        list[int] | None,
        typer.Option("--scaling-n", min=1, help="sizes of --scaling (repeat; default 1000 .. 60000)"),
    ] = None,
    parallel: Annotated[
        bool,
        typer.Option(
            "--parallel", help="also time suites serially and with --n-jobs 2 (attacks_mnist and small_models)"
        ),
    ] = False,
    parallel_suite: Annotated[
        list[Path] | None,
        typer.Option("--parallel-suite", help="suite of --parallel (repeat; default attacks_mnist, small_models)"),
    ] = None,
    certify: Annotated[
        bool,
        typer.Option(
            "--certify", help="also time ibp, crown and smoothing on lenet_crown against a forward pass and ART's DeepZ"
        ),
    ] = False,
    no_workload: Annotated[
        bool, typer.Option("--no-workload", help="skip P5, the user workload (FGSM + PGD-40 over the grid)")
    ] = False,
    no_micro: Annotated[bool, typer.Option("--no-micro", help="skip P1-P3 (bounds, single attacks)")] = False,
    device: Annotated[
        str, typer.Option("--device", help="device of P5, the user workload: cpu, cuda, cuda:N or auto")
    ] = "cpu",
    workload_steps: Annotated[
        int | None,
        typer.Option("--workload-steps", min=1, help="PGD steps of P5, step 2.5 eps / steps (40; 10 with --quick)"),
    ] = None,
) -> None:
    """Measure forward/backward bounds, native FGSM/PGD sweeps and ART's loops in one process; print the ratios."""
    models = tuple(model or ("lenet", "mlp"))
    for name in models:
        if name not in MODELS:
            raise RegistryError(f"--model: {MODELS.unknown_message(name)}")
    if data not in DATASETS:
        raise RegistryError(f"--data: {DATASETS.unknown_message(data)}")
    if device not in ("cpu", "auto") and not device.startswith("cuda"):
        raise typer.BadParameter(f"--device: {device!r} is not allowed (allowed: cpu, cuda, cuda:N, auto)")
    if split not in ("train", "test"):
        raise typer.BadParameter(f"--split: {split!r} is not allowed (allowed: train, test)")
    harness = None if no_harness else (suite or (QUICKSTART if quick else ATTACKS_MNIST))
    if harness is not None and not harness.is_file():
        raise FileNotFoundError(f"--suite: file {harness} not found")
    _check_amounts(n=n, batch_size=batch_size, repeats=repeats, threads=threads, workload_steps=workload_steps)
    for size in scaling_n or ():
        if size > limits.FLAG_SAMPLES:
            raise typer.BadParameter(f"--scaling-n: {size} is over the cap of {limits.FLAG_SAMPLES:,}")
    kwargs: dict = {"threads": threads} if threads else {}
    if parallel_suite and not parallel:
        raise typer.BadParameter("--parallel-suite: only used with --parallel")
    if parallel:
        kwargs["parallel_suites"] = tuple(parallel_suite or (ATTACKS_MNIST, SMALL_MODELS))
        for path in kwargs["parallel_suites"]:
            if not path.is_file():
                raise FileNotFoundError(f"--parallel-suite: file {path} not found")
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
        device=device,
        micro=not no_micro,
        workload=not no_workload,
        certify=certify,
        workload_steps=(steps := workload_steps or (10 if quick else 40)),
        workload_rel_step=2.5 / steps,  # Madry's step: 2.5 eps over the steps
        **_scaling_options(scaling, quick, data, models, scaling_n),
        **kwargs,
    )
    doc = run_perf(cfg, echo=err.print)
    if doc["scaling"] is not None:
        figure = (json_path or Path("perf.json")).with_suffix(".scaling.png")
        doc["scaling"]["figure"] = str(scaling_figure(doc["scaling"], figure))
    _print(doc)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(doc, indent=2) + "\n")
        console.print(f"measurements: {json_path}")
    if doc["scaling"] is not None:
        console.print(f"scaling figure: {doc['scaling']['figure']}")
    if not no_mlflow:
        run_id = log_perf_run(doc)
        console.print(f"MLflow run {run_id} in experiment 'perf' at {tracking_uri()}")


PERF_REPEATS = 100
"""``bench perf --repeats`` at most (each repeat times every measurement again)."""


def _check_amounts(
    *, n: int | None, batch_size: int, repeats: int | None, threads: int | None, workload_steps: int | None
) -> None:
    """The amounts of work ``bench perf`` takes from its options, capped (docs/security.md, Limits on input)."""
    most_threads = limits.cores() * limits.THREADS_PER_CORE
    caps = (
        ("--n", n, limits.FLAG_SAMPLES),
        ("--batch-size", batch_size, limits.BATCH_SIZE),
        ("--repeats", repeats, PERF_REPEATS),
        ("--threads", threads, most_threads),
        ("--workload-steps", workload_steps, limits.WORK_CAPS["steps"]),
    )
    for option, value, cap in caps:
        if value is not None and value > cap:
            why = f" ({limits.THREADS_PER_CORE} per core of this machine)" if option == "--threads" else ""
            raise typer.BadParameter(f"{option}: {value} is over the cap of {cap:,}{why}")


def _scaling_options(scaling: bool, quick: bool, data: str, models: tuple[str, ...], sizes: list[int] | None) -> dict:
    """Sizes, data and model of ``--scaling``: Fashion-MNIST's training split, or ``--data`` with ``--quick``."""
    if not scaling:
        if sizes:
            raise typer.BadParameter("--scaling-n: only used with --scaling")
        return {}
    chosen = tuple(sorted(set(sizes))) if sizes else (QUICK_SIZES if quick else SIZES)
    if not quick:
        return {"scaling_sizes": chosen}
    model = "mlp" if "mlp" in models else models[0]
    return {"scaling_sizes": chosen, "scaling_data": data, "scaling_model": model}


def _titled(title: str) -> Table:
    """A table whose title is printed on its own line first: a table title wraps to the table's width."""
    console.print(f"\n{title}", highlight=False, soft_wrap=True)
    return Table()


def _print(doc: dict) -> None:
    cfg = doc["config"]
    for name, m in doc["models"].items():
        table = _titled(f"{name}: {cfg['n']} inputs, batch {cfg['batch_size']}, {cfg['threads']} threads")
        table.add_column("measurement")
        table.add_column("seconds (median)", justify="right")
        table.add_column("grad evals", justify="right")
        for key, seconds in m["times"].items():
            evals = m["grad_evals"].get(key)
            table.add_row(key, f"{seconds:.3f}", "" if evals is None else str(evals))
        for key, ratio in m["ratios"].items():
            table.add_row(key, f"{ratio:.3f}x (fastest runs: {m['best_ratios'][key]:.3f}x)", "")
        console.print(table)
    for name, w in (doc["workload"] or {}).items():
        table = _titled(f"P5 {name}: FGSM + PGD-{doc['config']['workload_steps']} over the grid, {w['n']} inputs")
        for column in ("way", "seconds", "fgsm", "pgd", "ratio to harness"):
            table.add_column(column, justify="right")
        for way, seconds in w["times"].items():
            split = w["attack_seconds"][way]
            ratio = "" if way == "harness" else f"{w['ratios'][f'{way} / harness']:.2f}x"
            table.add_row(way, f"{seconds:.2f}", f"{split['fgsm']:.2f}", f"{split['pgd']:.2f}", ratio)
        console.print(table)
        console.print(f"harness not significantly weaker than either loop (McNemar, Holm): {w['harness_not_weaker']}")
    if doc.get("certify") is not None:
        _print_certify(doc["certify"])
    if doc["scaling"] is not None:
        s = doc["scaling"]
        table = _titled(f"scaling: {s['model']} on {s['data']} ({s['split']}), whole runs in fresh processes")
        for column in ("n", "wall s", "ms per sample", "peak GiB"):
            table.add_column(column, justify="right")
        for p in s["points"]:
            row = (p["n"], f"{p['wall_seconds']:.2f}", f"{1e3 * p['seconds_per_sample']:.3f}")
            table.add_row(*map(str, row), f"{p['peak_rss_bytes'] / 2**30:.2f}")
        console.print(table)
    if doc["harness"] is not None:
        h = doc["harness"]
        table = _titled(f"harness: {h['suite']} ({h['n']} samples, {h['cells']} cells)")
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
        drawing_peak = h["drawing_peak_rss_bytes"]
        shown = "none: drawn in the run's process" if drawing_peak is None else f"{drawing_peak / 2**30:.2f}"
        table.add_row("drawing process peak (GiB)", shown)
        console.print(table)
    table = _titled("targets")
    for column in ("id", "model", "ratio", "target", "median", "fastest", ""):
        table.add_column(column)
    for t in doc["targets"]:
        verdict = "[green]pass[/]" if t["passed"] else "[bold red]FAIL[/]"
        measured, best = f"{t['measured']:.3f}", f"{t['measured_best']:.3f}"
        table.add_row(t["id"], t["model"], t["what"], t["target"], measured, best, verdict)
    console.print(table)


def _print_certify(c: dict) -> None:
    """The certifiers' times and counts (``--certify``), then their comparisons with ART's DeepZ and the bounds."""
    table = _titled(f"certifiers: {c['model']}, Linf eps {c['eps']:g}, {c['n']} inputs")
    for column in ("measurement", "seconds (median)", "certified"):
        table.add_column(column, justify="right")
    for key, seconds in c["times"].items():
        table.add_row(key, f"{seconds:.3f}", str(c["certified"].get(key, "")))
    art = c["art"]
    table.add_row(f"crown, {art['n']} inputs, whole ball", f"{art['crown_seconds']:.3f}", str(art["crown_certified"]))
    table.add_row(f"ART DeepZ, {art['n']} inputs", f"{art['deepz_seconds']:.3f}", str(art["deepz_certified"]))
    sm = c["smoothing"]
    for key, seconds in sm["times"].items():
        table.add_row(f"{key} ({sm['n']} inputs x {sm['n0'] + sm['draws']} draws)", f"{seconds:.3f}", "")
    for key, ratio in c["ratios"].items():
        table.add_row(key, f"{ratio:.2f}x", "")
    console.print(table)
