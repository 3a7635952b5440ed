"""``bench crosscheck``: native attacks side by side with their ART counterparts (bench/crosscheck.py).

Exit codes: 0 every pair agrees, 1 a pair disagrees beyond its tolerance, 2 bad usage.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.table import Table

from bench import autoattack_ref
from bench.certify.crosscheck import certifier_crosscheck
from bench.cli.common import app, console, err, user_errors
from bench.crosscheck import CROSSCHECK_COLUMNS, crosscheck_models, pair_results
from bench.data import DATASETS, load_dataset, select
from bench.engine import prepare_models, resolve_device, zoo_model
from bench.registry import RegistryError
from bench.suite import load_suite
from model_zoo import MODELS


def _table(rows: object, title: str) -> Table:
    assert isinstance(rows, pd.DataFrame)
    table = Table(title=title)
    for column in ("pair", "model", "eps", "max abs diff", "labels agree", "robust native", "robust ART", "tol", ""):
        table.add_column(column, justify="left" if column in ("pair", "model") else "right")
    for _, row in rows.iterrows():
        table.add_row(
            str(row["pair"]),
            str(row["model"]),
            f"{row['eps']:g}",
            f"{row['max_abs_diff']:.2e}",
            f"{row['label_agreement']:.3f}",
            f"{row['robust_acc_native']:.3f}",
            f"{row['robust_acc_art']:.3f}",
            f"{row['tolerance']:.2g}",
            "[green]ok[/]" if row["passed"] else "[bold red]FAIL[/]",
        )
    return table


@app.command("crosscheck")
@user_errors
def crosscheck_command(
    suite: Annotated[Path | None, typer.Argument(help="suite YAML: its models and data set")] = None,
    model: Annotated[list[str] | None, typer.Option("--model", help="zoo model (repeat for several)")] = None,
    data: Annotated[str | None, typer.Option("--data", help="data set (see `bench ls`)")] = None,
    split: Annotated[str, typer.Option("--split", help="train or test")] = "test",
    limit: Annotated[int, typer.Option("--limit", min=1, help="first N samples")] = 200,
    seed: Annotated[int, typer.Option("--seed", help="seed of targets and random starts")] = 0,
    json_path: Annotated[Path | None, typer.Option("--json", help="write the table as JSON here")] = None,
    csv_path: Annotated[Path | None, typer.Option("--csv", help="write the table as CSV here")] = None,
    autoattack: Annotated[
        bool,
        typer.Option(
            "--autoattack",
            help="compare apgd, apgd_t and reliable with the original AutoAttack code (optional package "
            "pyautoattack) on --model and --data at --eps instead",
        ),
    ] = False,
    eps: Annotated[float, typer.Option("--eps", min=0.0, max=1.0, help="Linf eps of --autoattack")] = 0.1,
    certifiers: Annotated[
        bool,
        typer.Option(
            "--certifiers",
            help="compare the certifiers (ibp, crown, smoothing) with ART's on a Conv2d/Linear/ReLU network trained "
            "briefly on --data (default digits) instead",
        ),
    ] = False,
) -> None:
    """Run every native attack and its ART counterpart on the same models, inputs and labels; compare."""
    if autoattack:
        if suite is not None or not model or data is None:
            err.print("[bold red]error:[/] --autoattack takes --model M --data D (and --split, --limit, --eps)")
            raise typer.Exit(2)
        _autoattack(model, data, split, limit, seed, eps, json_path)
        return
    if certifiers:
        if suite is not None or model:
            err.print("[bold red]error:[/] --certifiers takes --data (and --split, --limit), no SUITE or --model")
            raise typer.Exit(2)
        _certifiers(data or "digits", split, limit, seed, json_path)
        return
    if (suite is None) == (not model and data is None):
        err.print("[bold red]error:[/] give a SUITE, or --model M --data D (not both)", highlight=False)
        raise typer.Exit(2)
    if suite is not None:
        spec = load_suite(suite)
        device = resolve_device(spec.device)
        full = load_dataset(spec.dataset.name, spec.dataset.split, **spec.dataset.options)
        # The suite's own samples (dataset.offset, dataset.n), at most --limit of them.
        split_data = select(full, offset=spec.dataset.offset, n=spec.dataset.n, limit=limit)
        refs, _ = prepare_models(spec, split_data, device)
        models = {model_id: ref.load(device) for model_id, ref in refs.items()}
        seed = spec.seed
    else:
        if not model or data is None:
            err.print("[bold red]error:[/] --model and --data go together", highlight=False)
            raise typer.Exit(2)
        device = resolve_device("auto")
        for name in model:
            if name not in MODELS:
                raise RegistryError(f"--model: {MODELS.unknown_message(name)}")
        split_data = select(load_dataset(data, split), limit=limit)
        models = {name: zoo_model(name, data, seed=seed, device=device).model for name in model}
    table = crosscheck_models(models, split_data, seed=seed, n=limit)
    title = f"native attacks vs ART: {split_data.name} {split_data.split}, {min(limit, len(split_data))} samples"
    console.print(_table(table, title))
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        doc = {"pairs": pair_results(table), "rows": json.loads(table[CROSSCHECK_COLUMNS].to_json(orient="records"))}
        json_path.write_text(json.dumps(doc, indent=2) + "\n")
    if csv_path is not None:
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        table[CROSSCHECK_COLUMNS].to_csv(csv_path, index=False)
    failed = [pair for pair, ok in pair_results(table).items() if not ok]
    if failed:
        err.print(f"[bold red]disagreement with ART:[/] {', '.join(failed)}", highlight=False)
        raise typer.Exit(1)
    console.print(f"all {len(pair_results(table))} pairs agree with ART within tolerance")


def _certifiers(data: str, split: str, limit: int, seed: int, json_path: Path | None) -> None:
    """``--certifiers``: every comparison of bench/certify/crosscheck.py, one row each; exit 1 if one fails."""
    if data not in DATASETS:
        raise RegistryError(f"--data: {DATASETS.unknown_message(data)}")
    test = select(load_dataset(data, split), limit=limit)
    rows = certifier_crosscheck(load_dataset(data, "train"), test, seed=seed)
    table = Table(title=f"certifiers vs ART: {data} {split}, {len(test)} samples, a network trained on {data} train")
    for column in ("certifier", "ART", "eps", "measure", "value", "bound", ""):
        table.add_column(column, justify="right" if column in ("eps", "value", "bound") else "left")
    for row in rows:
        eps = "" if row.eps != row.eps else f"{row.eps:g}"
        verdict = "[green]ok[/]" if row.passed else "[bold red]FAIL[/]"
        table.add_row(row.certifier, row.art, eps, row.measure, f"{row.value:.3g}", f"{row.bound:g}", verdict)
    console.print(table)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps({"certifiers": [r.as_dict() for r in rows]}, indent=2) + "\n")
    failed = [f"{r.certifier} ({r.measure})" for r in rows if not r.passed]
    if failed:
        err.print(f"[bold red]disagreement with ART:[/] {', '.join(failed)}", highlight=False)
        raise typer.Exit(1)
    console.print(f"all {len(rows)} certifier comparisons agree with ART")


def _autoattack(
    names: list[str], data: str, split: str, limit: int, seed: int, eps: float, json_path: Path | None
) -> None:
    """``--autoattack``: bench/autoattack_ref.py's comparison, one row per (model, pair); exit 1 if ours is weaker."""
    if not autoattack_ref.available():
        console.print(autoattack_ref.MISSING, markup=False, highlight=False)
        return
    if data not in DATASETS:
        raise RegistryError(f"--data: {DATASETS.unknown_message(data)}")
    for name in names:
        if name not in MODELS:
            raise RegistryError(f"--model: {MODELS.unknown_message(name)}")
    device = resolve_device("auto")
    test = select(load_dataset(data, split), limit=limit)
    models = {name: zoo_model(name, data, seed=seed, device=device).model for name in names}
    rows = autoattack_ref.compare_with_autoattack(models, test, eps=eps, seed=seed)
    table = Table(title=f"native vs the original AutoAttack: {data} {split}, {len(test)} samples, Linf eps {eps:g}")
    for column in ("pair", "original", "model", "robust native", "robust original", "only native", "only original",
                   "p (native weaker)", "seconds native", "seconds original", "original / native", ""):  # fmt: skip
        table.add_column(column, justify="left" if column in ("pair", "original", "model") else "right")
    for r in rows:
        table.add_row(
            r.pair, r.original, r.model, f"{r.robust_native:.3f}", f"{r.robust_original:.3f}", str(r.only_native),
            str(r.only_original), f"{r.p_weaker:.3g}", f"{r.seconds_native:.1f}", f"{r.seconds_original:.1f}",
            f"{r.time_ratio:.2f}x", "[green]ok[/]" if r.passed else "[bold red]WEAKER[/]",
        )  # fmt: skip
    console.print(table)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps({"autoattack": [r.as_dict() for r in rows]}, indent=2) + "\n")
    weaker = [f"{r.pair} on {r.model}" for r in rows if not r.passed]
    if weaker:
        err.print(f"[bold red]significantly weaker than the original AutoAttack:[/] {', '.join(weaker)}")
        raise typer.Exit(1)
    console.print(f"all {len(rows)} comparisons: not significantly weaker than the original AutoAttack")
