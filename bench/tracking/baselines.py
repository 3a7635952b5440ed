"""Baselines kept in MLflow: logged as an artifact of a run's parent run, named by experiment-tag aliases.

The baseline file itself (schema, building, reading) is :mod:`bench.gate.baseline`;
this module only moves it in and out of MLflow.
"""

from __future__ import annotations

import re
from pathlib import Path

from bench.gate.baseline import Baseline, BaselineError, parse_baseline
from bench.tracking.client import TrackingUnavailable
from bench.tracking.mirror import sync_run_dir

ARTIFACT = "bench_baseline/baseline.json"
ALIAS_TAG = "bench.baseline.{alias}"
_ALIAS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def _check_alias(alias: str) -> str:
    if not _ALIAS.match(alias):
        raise BaselineError(f"alias {alias!r}: use letters, digits, '_', '.', '-' (it becomes an MLflow tag key)")
    return alias


def publish_baseline(run_dir: str | Path, baseline: Baseline, *, alias: str | None = None) -> str:
    """Log ``baseline`` as the artifact ``bench_baseline/baseline.json`` of the run's MLflow parent run.

    The run directory is mirrored first if it is not yet (``bench sync`` is
    idempotent). With ``alias``, the experiment tag ``bench.baseline.<alias>``
    is set to the parent run's id, so ``bench check --baseline-alias <alias>``
    finds it. Returns the MLflow run id.
    """
    from mlflow.exceptions import MlflowException  # heavy optional (about 1 s): only MLflow users pay for it
    from mlflow.tracking import MlflowClient  # heavy optional (about 1 s): only MLflow users pay for it

    if alias is not None:
        _check_alias(alias)
    run_id = sync_run_dir(run_dir)
    client = MlflowClient()
    try:
        client.log_text(run_id, baseline.to_json(), ARTIFACT)
        client.set_tag(run_id, "bench.baseline", "true")
        if alias is not None:
            experiment_id = client.get_run(run_id).info.experiment_id
            client.set_experiment_tag(experiment_id, ALIAS_TAG.format(alias=alias), run_id)
    except (MlflowException, OSError) as exc:
        first = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        raise TrackingUnavailable(f"logging the baseline to MLflow run {run_id} failed: {first}") from None
    return run_id


def fetch_baseline_run(run_id: str) -> Baseline:
    """The baseline logged to MLflow run ``run_id`` by :func:`publish_baseline`."""
    import mlflow  # heavy optional (about 1 s): only MLflow users pay for it
    from mlflow.exceptions import MlflowException  # heavy optional (about 1 s): only MLflow users pay for it

    try:
        text = mlflow.artifacts.load_text(f"runs:/{run_id}/{ARTIFACT}")
    except (MlflowException, OSError) as exc:
        first = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        raise BaselineError(
            f"MLflow run {run_id}: no baseline artifact {ARTIFACT} ({first}); "
            "log one with `bench baseline RUN_DIR --mlflow`"
        ) from None
    return parse_baseline(text, source=f"MLflow run {run_id} ({ARTIFACT})")


def resolve_alias(alias: str, experiment: str) -> str:
    """The MLflow run id the experiment tag ``bench.baseline.<alias>`` of ``experiment`` points at."""
    from mlflow.exceptions import MlflowException  # heavy optional (about 1 s): only MLflow users pay for it
    from mlflow.tracking import MlflowClient  # heavy optional (about 1 s): only MLflow users pay for it

    _check_alias(alias)
    try:
        exp = MlflowClient().get_experiment_by_name(experiment)
    except MlflowException as exc:
        raise BaselineError(f"MLflow: cannot read experiment {experiment!r} ({str(exc).splitlines()[0]})") from None
    if exp is None:
        raise BaselineError(f"MLflow: experiment {experiment!r} not found; no baseline alias {alias!r} to resolve")
    run_id = exp.tags.get(ALIAS_TAG.format(alias=alias))
    if run_id is None:
        known = sorted(k.removeprefix("bench.baseline.") for k in exp.tags if k.startswith("bench.baseline."))
        raise BaselineError(
            f"MLflow experiment {experiment!r}: no baseline alias {alias!r} "
            f"(known: {', '.join(known) or 'none'}); set one with `bench baseline RUN_DIR --mlflow-alias {alias}`"
        )
    return str(run_id)
