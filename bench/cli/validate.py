"""``bench validate``: check suite files without running them.

Schema, registry names and attack parameters (as ``bench run`` would), and then
what a run needs from the disk: each data set's files are read (no download;
a missing file gets the loader's message, which says where it looked), the
samples are selected and checked as ``bench run`` checks them before any cell
(:func:`bench.suite.preflight.data_problems`: target classes, eps bounds), and
every external model is built, its weights loaded and its outputs checked by the
run's own code (:func:`bench.engine.models.prepare_external`). Zoo models are
not trained here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import torch
import typer

from bench.cli import overrides
from bench.cli.common import app, console, describe, user_errors
from bench.data import DataError, DataSplit, load_dataset, select
from bench.engine.models import prepare_external
from bench.suite import Suite, SuiteError, expand, load_raw
from bench.suite import validate as validate_suite
from bench.suite.preflight import data_problems


def disk_problems(spec: Suite, *, data: bool = True) -> Iterator[str]:
    """What the suite needs from the disk and is not there: data files (where they were looked for), weights.

    ``data=False`` skips reading the data set (``--no-data``: validating a suite on a machine without its files).
    """
    options = dict(spec.dataset.options)
    split: DataSplit | None = None
    if not data:
        console.print(f"  dataset {spec.dataset.name}: not checked (--no-data)")
    elif options.get("download"):
        console.print(f"  dataset {spec.dataset.name}: not checked ('download: true': the run fetches the files)")
    else:
        try:
            full = load_dataset(spec.dataset.name, spec.dataset.split, **options)
            split = select(full, offset=spec.dataset.offset, n=spec.dataset.n)
        except DataError as exc:
            yield f"dataset: {exc}"
        else:
            console.print(f"  dataset {spec.dataset.name} ({spec.dataset.split}): {len(full)} samples found")
            yield from data_problems(spec, split)
    for i, model in enumerate(spec.models):
        if model.weights is not None and not Path(model.weights).is_file():
            yield f"models[{i}].weights: file not found: {model.weights}"
        elif model.external and split is not None:
            try:  # what bench run does with it before any cell: build, load the weights, check the outputs
                prepare_external(model, spec, split, torch.device("cpu"))
            except Exception as exc:
                message, code = describe(exc)
                if code != 2:
                    raise
                yield f"models[{i}]: {message}"


TRUST_HELP = (
    "trust this module (and its submodules) for factory: and attack plugins; repeatable. "
    "Also $BENCH_TRUSTED_MODULES (comma-separated); model_zoo and modules in the suite's folder are always trusted"
)


@app.command()
@user_errors
def validate(
    suites: Annotated[list[Path], typer.Argument(help="suite YAML files")],
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", metavar="KEY=VALUE", help="override a suite field before validation (as bench run)"),
    ] = None,
    trust: Annotated[list[str] | None, typer.Option("--trust", help=TRUST_HELP, metavar="MODULE")] = None,
    no_data: Annotated[
        bool, typer.Option("--no-data", help="do not look for the data set's files (schema, names, weights only)")
    ] = False,
) -> None:
    """Check suite files without running them (schema, names, attack parameters, data files, weights)."""
    for path in suites:
        raw = overrides.apply(load_raw(path), set_ or [], source=path)
        spec = validate_suite(raw, source=path, base=path.parent, trust=trust or ())
        cells = expand(spec)
        problems = list(disk_problems(spec, data=not no_data))
        if problems:
            raise SuiteError("\n".join(f"{path}: {p}" for p in problems))
        certify = (
            f" + {len(spec.models)} x {len(spec.certify)} certifiers = {len(spec.models) * len(spec.certify)} "
            "certification cells"
            if spec.certify
            else ""
        )
        console.print(
            f"{path}: ok ({len(spec.models)} models x {len(spec.attacks)} attacks = {len(cells)} cells{certify})"
        )
