"""``bench zoo``: the zoo's reference weights (model_zoo/reference.py): list, train, export, import, verify.

Exit codes: 0 success, 1 a verification that failed (a corrupt reference file,
a file that is not a reference, a model trained here whose digest differs from
the reference with ``--expect-reference``), 2 bad input (one line naming the file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.table import Table

from bench.cli.common import app, console, fail, user_errors
from bench.data import load_dataset
from bench.suite import load_raw, validate
from model_zoo import MODELS, WEIGHTS_MODES, TrainedModel, get_model, resolve_recipe
from model_zoo import reference as refs
from model_zoo.weights import WeightsError, read_weights, write_weights

zoo_app = typer.Typer(help="The zoo's reference weights: list, train, export, import, verify.", no_args_is_help=True)
app.add_typer(zoo_app, name="zoo", help="The zoo's reference weights: list, train, export, import, verify.")

RECIPE_HELP = "a recipe field, e.g. --recipe epochs=2 (repeatable; values are YAML)"


def _recipe(pairs: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise fail(f"--recipe {pair!r}: expected FIELD=VALUE, e.g. epochs=2")
        out[key.strip()] = yaml.safe_load(value)
    return out


def _targets(
    names: list[str] | None, data: str, seed: int, recipe: list[str] | None, suite: Path | None
) -> list[tuple[str, str, int, dict[str, Any], dict[str, Any]]]:
    """(model, data set, seed, recipe overrides, data options) for the named models or a suite's zoo models."""
    if suite is not None:
        if names:
            raise fail("give model names or --suite, not both")
        spec = validate(load_raw(suite), source=suite, base=suite.parent)
        return [
            (m.name, spec.dataset.name, spec.seed, dict(m.recipe), dict(spec.dataset.options))
            for m in spec.models
            if not m.external
        ]
    if not names:
        raise fail("name a zoo model (see `bench ls`) or give --suite FILE")
    overrides = _recipe(recipe)
    for name in names:
        MODELS.get(name)  # an unknown name: one line with "did you mean"
        resolve_recipe(name, overrides)  # an unknown recipe field: one line naming the allowed ones
    return [(name, data, seed, overrides, {}) for name in names]


def _get(target: tuple[str, str, int, dict[str, Any], dict[str, Any]], weights: str) -> TrainedModel:
    name, data, seed, recipe, options = target
    train = load_dataset(data, "train", **options)
    return get_model(name, data, train=train, seed=seed, recipe=recipe, weights=weights, progress_desc=f"train {name}")


@zoo_app.command("list")
@user_errors
def list_references() -> None:
    """Every recorded reference: model, data set, recipe, digest and whether its file is here."""
    table = Table("model", "data set", "epochs", "seed", "sha256", "size", "clean", "file here", box=None)
    for entry in refs.entries():
        state, _ = refs.verify(entry)
        where = {"ok": "shipped" if entry.file else "imported", "missing": "no", "corrupt": "CORRUPT"}[state]
        clean = "" if entry.clean_accuracy is None else f"{entry.clean_accuracy:.3f}"
        table.add_row(
            entry.model,
            entry.dataset,
            str(entry.recipe.get("epochs", "")),
            str(entry.seed),
            entry.short,
            f"{entry.bytes / 1024:.0f} KiB",
            clean,
            where,
        )
    console.print(table)


@zoo_app.command("train")
@user_errors
def train(
    names: Annotated[list[str] | None, typer.Argument(help="zoo model names")] = None,
    data: Annotated[str, typer.Option("--data", help="data set (see `bench ls`)")] = "mnist5k",
    seed: Annotated[int, typer.Option("--seed")] = 0,
    recipe: Annotated[list[str] | None, typer.Option("--recipe", metavar="FIELD=VALUE", help=RECIPE_HELP)] = None,
    suite: Annotated[Path | None, typer.Option("--suite", help="train every zoo model of this suite")] = None,
    expect_reference: Annotated[
        bool, typer.Option("--expect-reference", help="exit 1 when a digest differs from a recorded reference")
    ] = False,
) -> None:
    """Train zoo models by their recipes (or read them from the checkpoint cache) and compare with the references."""
    differ = 0
    for target in _targets(names, data, seed, recipe, suite):
        trained = _get(target, "retrain")
        entry = refs.reference_for(trained.key)
        if entry is None:
            verdict = "no reference recorded for this recipe, seed and data"
        elif trained.weights == "reference":
            verdict = f"equal to the reference sha256:{entry.short}"
        else:
            differ += 1
            verdict = f"DIFFERS from the reference sha256:{entry.short} (this CPU rounds training differently)"
        console.print(f"{target[0]} on {target[1]}: sha256 {trained.weights_sha256} {verdict}", highlight=False)
    if differ and expect_reference:
        raise typer.Exit(1)


@zoo_app.command("export")
@user_errors
def export(
    name: Annotated[str, typer.Argument(help="zoo model name")],
    output: Annotated[Path, typer.Option("-o", "--output", help="the .safetensors file to write")],
    data: Annotated[str, typer.Option("--data", help="data set (see `bench ls`)")] = "mnist5k",
    seed: Annotated[int, typer.Option("--seed")] = 0,
    recipe: Annotated[list[str] | None, typer.Option("--recipe", metavar="FIELD=VALUE", help=RECIPE_HELP)] = None,
    weights: Annotated[str, typer.Option("--weights", help="reference (default) or retrain")] = "reference",
) -> None:
    """Write a zoo model's weights (the reference where here, else trained by the recipe) as safetensors."""
    if weights not in WEIGHTS_MODES:
        raise fail(f"--weights: {weights!r} is not allowed (allowed: {', '.join(WEIGHTS_MODES)})")
    (target,) = _targets([name], data, seed, recipe, None)
    trained = _get(target, weights)
    digest = write_weights(trained.model, output)
    console.print(f"{name} on {data}: {trained.weights} weights sha256 {digest} -> {output}", highlight=False)


@zoo_app.command("import")
@user_errors
def import_(files: Annotated[list[Path], typer.Argument(help=".safetensors files made by `bench zoo export`")]) -> None:
    """Install reference weights files; each file's digest must be a recorded reference's."""
    for file in files:
        entry, path = refs.import_weights(file)
        console.print(f"{file}: the reference of {entry.model} on {entry.dataset} (sha256 {entry.sha256}) -> {path}")


@zoo_app.command("verify")
@user_errors
def verify(
    files: Annotated[
        list[Path] | None, typer.Argument(help="weights files to identify (default: the recorded references)")
    ] = None,
) -> None:
    """Check every reference file here against its digest, or say which reference each given file is."""
    failed = 0
    if files:
        for file in files:
            try:
                _, digest = read_weights(file)
            except WeightsError as exc:
                console.print(f"FAIL {exc}", highlight=False)
                failed += 1
                continue
            entry = refs.by_digest(digest)
            if entry is None:
                console.print(f"FAIL {file}: sha256 {digest} is not a recorded reference", highlight=False)
                failed += 1
            else:
                console.print(f"ok   {file}: the reference of {entry.model} on {entry.dataset}", highlight=False)
    else:
        for entry in refs.entries():
            state, detail = refs.verify(entry)
            failed += state == "corrupt"
            mark = {"ok": "ok  ", "missing": "--  ", "corrupt": "FAIL"}[state]
            console.print(f"{mark} {entry.model} on {entry.dataset} sha256:{entry.short}: {detail}", highlight=False)
    if failed:
        raise typer.Exit(1)
