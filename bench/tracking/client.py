"""The MLflow connection: where the store is, failing fast when a server is down, the error raised then."""

from __future__ import annotations

import os

import requests

from bench.tracking.layout import ui_links

UID_TAG = "bench.run_uid"
COMPLETE_TAG = "bench.sync_complete"


class TrackingUnavailable(RuntimeError):
    """MLflow could not be reached or refused a write; the run directory is unaffected."""


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else MLflow's own default (sqlite ``mlflow.db`` here)."""
    import mlflow  # heavy optional (about 1 s): only tracking needs it

    return os.environ.get("MLFLOW_TRACKING_URI") or mlflow.get_tracking_uri()


def fail_fast() -> None:
    """Fail fast instead of MLflow's default minutes of retries when a server is down (user settings win)."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")


def check_reachable(uri: str) -> None:
    """Raise :class:`TrackingUnavailable` unless an http(s) tracking server answers its health check."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        requests.get(uri.rstrip("/") + "/health", timeout=5).raise_for_status()
    except requests.RequestException as exc:
        raise TrackingUnavailable(f"MLflow server {uri} is unreachable: {type(exc).__name__}") from None


def review_links(run_id: str, uri: str | None = None) -> tuple[str | None, str]:
    """``(mlflow ui command or None for a tracking server, URL of the run)`` for the end of ``bench run``."""
    from mlflow.tracking import MlflowClient  # heavy optional (about 1 s): only tracking needs it

    uri = uri or tracking_uri()
    experiment_id = MlflowClient(tracking_uri=uri).get_run(run_id).info.experiment_id
    return ui_links(uri, str(experiment_id), run_id)
