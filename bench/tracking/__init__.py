"""Every MLflow call of the harness: mirroring run directories, baselines in MLflow, runs back out for reports.

Modules: :mod:`~bench.tracking.client` (tracking URI, failing fast, the
:class:`TrackingUnavailable` error and the tags), :mod:`~bench.tracking.mirror`
(run directory -> MLflow, docs/mlflow.md), :mod:`~bench.tracking.cells` (a nested
run per cell, the comparison figure), :mod:`~bench.tracking.layout` (run names, curve metrics
and steps per norm, the review command and URL), :mod:`~bench.tracking.baselines`
(gate baselines as artifacts and aliases), :mod:`~bench.tracking.runs`
(parent runs downloaded like run directories for ``bench report``).
MLflow itself is imported inside the functions: it costs about a second and
runs without tracking never need it.
"""

from bench.tracking.baselines import fetch_baseline_run, publish_baseline, resolve_alias
from bench.tracking.client import (
    COMPLETE_TAG,
    UID_TAG,
    TrackingUnavailable,
    check_reachable,
    fail_fast,
    review_links,
    tracking_uri,
)
from bench.tracking.mirror import sync_run_dir, time_sync_into_fresh_store
from bench.tracking.perf import log_perf_run
from bench.tracking.runs import download_mlflow_run, download_runs, experiment_run_ids

__all__ = [
    "COMPLETE_TAG",
    "UID_TAG",
    "TrackingUnavailable",
    "check_reachable",
    "download_mlflow_run",
    "download_runs",
    "experiment_run_ids",
    "fail_fast",
    "fetch_baseline_run",
    "log_perf_run",
    "publish_baseline",
    "resolve_alias",
    "review_links",
    "sync_run_dir",
    "time_sync_into_fresh_store",
    "tracking_uri",
]
