"""``bench ls``: the registered data sets, models and attacks, one line each."""

from __future__ import annotations

from rich.table import Table

from bench.attacks import ATTACKS
from bench.cli.app import app, console
from bench.data import DATASETS
from model_zoo import MODELS


@app.command("ls")
def list_registered() -> None:
    """List registered data sets, models and attacks with a one-line description each."""
    for title, registry in (("data sets", DATASETS), ("models", MODELS), ("attacks", ATTACKS)):
        table = Table(title=title, title_justify="left", show_header=False, box=None)
        table.add_column("name", style="bold")
        table.add_column("description")
        for name in registry.names():
            table.add_row(name, registry.describe(name))
        console.print(table)
