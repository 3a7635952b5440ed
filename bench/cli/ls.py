"""``bench ls``: the registered data sets, models, attacks and certifiers (with norms and parameters), without torch.

It reads ``catalog.json`` (generated from the registries by :mod:`bench.cli.catalog`
and checked equal to them by tests/test_cli_habits.py), so it answers in the time
of a Python start, not of importing torch. It imports nothing of the harness.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

CATALOG = Path(__file__).with_name("catalog.json")

ls_app = typer.Typer(add_completion=False, rich_markup_mode=None)


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in params.items())


@ls_app.command("ls")
def list_registered() -> None:
    """List registered data sets, models, attacks and certifiers (with their norms and parameters)."""
    catalog = json.loads(CATALOG.read_text(encoding="utf-8"))
    console = Console(width=None if sys.stdout.isatty() else 200)
    for title in ("datasets", "models"):
        table = Table(title=title.replace("datasets", "data sets"), title_justify="left", show_header=False, box=None)
        table.add_column("name", style="bold", no_wrap=True)
        table.add_column("description")
        for name, entry in catalog[title].items():
            table.add_row(name, entry["description"])
        console.print(table)
    table = Table(title="attacks", title_justify="left", box=None)
    table.add_column("name", style="bold", no_wrap=True)
    table.add_column("norms", no_wrap=True)
    table.add_column("parameters (defaults)")
    table.add_column("description")
    for name, entry in catalog["attacks"].items():
        table.add_row(name, ", ".join(entry["norms"]), _params(entry["params"]), entry["description"])
    console.print(table)
    table = Table(title="certifiers (suite field certify:)", title_justify="left", box=None)
    for column in ("name", "norms", "kind", "parameters (defaults)", "description"):
        table.add_column(column, style="bold" if column == "name" else None, no_wrap=column in ("name", "norms"))
    for name, entry in catalog.get("certifiers", {}).items():
        norms = ", ".join(entry["norms"])
        table.add_row(name, norms, entry["kind"], _params(entry["params"]), entry["description"])
    console.print(table)
