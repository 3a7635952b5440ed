"""``bench sync``: mirror a finished run directory into MLflow (idempotent)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bench.cli.common import app, console, user_errors
from bench.tracking import sync_run_dir, tracking_uri


@app.command()
@user_errors
def sync(run_dir: Annotated[Path, typer.Argument(help="a finished run directory")]) -> None:
    """Mirror a run directory into MLflow (idempotent: a mirrored run is not logged twice).

    Only a finished run whose results match the sha256 in its manifest is mirrored.
    """
    # Not finished, or results changed since: RunError, exit 2 (says how to complete it with --resume);
    # MLflow down or failing: TrackingUnavailable, exit 1 (bench.cli.common).
    run_id = sync_run_dir(run_dir)
    console.print(f"{run_dir}: mirrored to MLflow run {run_id} at {tracking_uri()}")
