"""Mirrored runs back out of MLflow: find an experiment's latest runs, download a parent run like a run directory.

``bench report --runs/--experiment`` downloads through here, then renders the
downloaded folders like any run directory (:mod:`reports` never talks to MLflow).
"""

from __future__ import annotations

from pathlib import Path

import requests

from bench.tracking.client import COMPLETE_TAG, TrackingUnavailable, fail_fast, tracking_uri
from reports.sources import ReportError, RunData, load_run


def experiment_run_ids(experiment: str, *, last: int = 1) -> list[str]:
    """Ids of the ``last`` most recent completely mirrored parent runs of ``experiment``, oldest first."""
    from mlflow.tracking import MlflowClient  # heavy optional (about 1 s): only MLflow users pay for it

    client = MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = sorted(e.name for e in client.search_experiments())
        raise ReportError(f"--experiment: no MLflow experiment named {experiment!r} (found: {', '.join(names)})")
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`{COMPLETE_TAG}` = 'true'",
        order_by=["attributes.start_time DESC"],
        max_results=last,
    )
    if not runs:
        raise ReportError(f"--experiment: experiment {experiment!r} has no completely mirrored bench run")
    return [r.info.run_id for r in reversed(runs)]


def download_mlflow_run(run_id: str, dst: Path, *, trust_edited: bool = False) -> RunData:
    """Download a parent run's artifacts into ``dst`` (laid out like a run directory) and read them."""
    import mlflow  # heavy optional (about 1 s): only MLflow users pay for it
    from mlflow.exceptions import MlflowException  # heavy optional (about 1 s): only MLflow users pay for it

    try:
        info = mlflow.get_run(run_id)
    except MlflowException as exc:
        raise ReportError(f"--runs: MLflow run {run_id!r} not found ({str(exc).splitlines()[0][:200]})") from None
    if info.data.tags.get("mlflow.parentRunId"):
        raise ReportError(
            f"--runs: {run_id} is a nested (model x attack) run; give its parent run "
            f"{info.data.tags['mlflow.parentRunId']}"
        )
    dst.mkdir(parents=True, exist_ok=True)
    local = Path(mlflow.artifacts.download_artifacts(run_id=run_id, dst_path=str(dst)))
    if not (local / "manifest.json").exists():
        raise ReportError(f"--runs: MLflow run {run_id} has no manifest.json artifact (not a bench parent run)")
    name = info.data.tags.get("mlflow.runName") or run_id
    return load_run(local, label=name, mlflow_run_id=run_id, trust_edited=trust_edited)


def download_runs(
    run_ids: list[str], dst: Path, *, experiment: str | None = None, last: int = 1, trust_edited: bool = False
) -> list[RunData]:
    """Download the parent runs ``run_ids`` (or the ``last`` latest of ``experiment``) into ``dst/run<i>``.

    Raises :class:`ReportError` for a run or experiment that is not there and
    :class:`TrackingUnavailable` when the tracking server cannot be reached.
    """
    import mlflow  # heavy optional (about 1 s): only MLflow users pay for it
    from mlflow.exceptions import MlflowException  # heavy optional (about 1 s): only MLflow users pay for it

    fail_fast()
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        ids = experiment_run_ids(experiment, last=last) if experiment else run_ids
        return [
            download_mlflow_run(run_id, dst / f"run{i}", trust_edited=trust_edited) for i, run_id in enumerate(ids, 1)
        ]
    except (MlflowException, requests.RequestException, ConnectionError) as exc:
        raise TrackingUnavailable(f"MLflow at {uri}: {type(exc).__name__}: {str(exc)[:300]}") from None
