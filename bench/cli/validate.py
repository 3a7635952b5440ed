"""``bench validate``: check suite files (schema, registry names, attack parameters) without running them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bench.cli.app import app, console, user_errors
from bench.suite import expand, load_suite


@app.command()
@user_errors
def validate(suites: Annotated[list[Path], typer.Argument(help="suite YAML files")]) -> None:
    """Check suite files without running them (schema, names, attack parameters)."""
    for path in suites:
        spec = load_suite(path)
        cells = expand(spec)
        console.print(f"{path}: ok ({len(spec.models)} models x {len(spec.attacks)} attacks = {len(cells)} cells)")
