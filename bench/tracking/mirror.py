"""Mirror a run directory into MLflow (DESIGN.md, "MLflow layout").

The run directory is the source of truth; this module only copies it. One
parent run per suite execution, one nested run per (model, attack) cell:

* parent: tags (git commit, suite digest, versions, device), params (data
  set, split, n, seed), the resolved suite, results and manifest as
  artifacts, ``log_input`` of the evaluation data;
* nested: attack parameters as params; ``clean_accuracy``; ``robust_accuracy``
  and ``attack_success_rate`` as metric histories with ``step = round(eps*1000)``
  (MLflow's chart of the metric against step *is* the epsilon-accuracy curve);
  ``robust_accuracy_auc`` and ``robust_accuracy_eps_<eps>``; the curve PNG
  (``log_figure``), the per-eps table (``log_table``) and an adversarial example grid.

Syncing is idempotent: the parent carries the tag ``bench.run_uid``; a run
directory already mirrored completely is not logged again, and a partial
mirror (tracking failed mid-way) is deleted and redone.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench import stats
from bench.crosscheck import metric_name, pair_results
from bench.data import load_dataset, select
from bench.rundir import RunDir, RunDirError, open_run_dir
from bench.tracking.client import COMPLETE_TAG, UID_TAG, TrackingUnavailable, check_reachable, fail_fast, tracking_uri
from bench.types import eps_label, eps_step
from reports.figures import curve_figure, example_grid


def sync_run_dir(path: str | Path, *, uri: str | None = None) -> str:
    """Mirror the run directory at ``path`` into MLflow; returns the parent run id.

    Raises :class:`TrackingUnavailable` when the tracking server cannot be
    reached or fails during the sync.
    """
    fail_fast()
    import mlflow  # heavy optional (about 1 s), as in every function here: runs without tracking never load it
    from mlflow.exceptions import MlflowException  # heavy optional (about 1 s): runs without tracking never load it

    run = open_run_dir(path)
    uri = uri or tracking_uri()
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    try:
        return _sync(run)
    except (TrackingUnavailable, RunDirError):
        raise
    except (MlflowException, OSError, ConnectionError) as exc:
        raise TrackingUnavailable(f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}") from None
    except Exception as exc:  # requests' errors and the like, from deep in the client
        if type(exc).__module__.startswith(("requests", "urllib3")):
            raise TrackingUnavailable(f"{type(exc).__name__}: {str(exc)[:300]}") from None
        raise
    finally:
        while mlflow.active_run() is not None:
            mlflow.end_run(status="FAILED")


def _sync(run: RunDir) -> str:
    import mlflow  # heavy optional (about 1 s): runs without tracking never load it
    from mlflow.tracking import MlflowClient  # heavy optional (about 1 s): runs without tracking never load it

    manifest = run.read_manifest()
    if manifest.get("status") != "finished":
        raise TrackingUnavailable(f"{run.root}: the run has not finished (status {manifest.get('status')!r})")
    suite = run.read_suite()
    experiment = (suite.get("tracking") or {}).get("experiment") or suite["name"]
    exp = mlflow.set_experiment(experiment)
    client = MlflowClient()
    uid = manifest.get("run_uid")
    if not uid:
        raise RunDirError(f"{run.manifest}: no run_uid (not written by `bench run`)")
    existing = client.search_runs([exp.experiment_id], filter_string=f"tags.`{UID_TAG}` = '{uid}'")
    for old in existing:
        if old.data.tags.get(COMPLETE_TAG) == "true":
            return str(old.info.run_id)
    for old in existing:  # a partial mirror from an interrupted sync: redo it whole
        for child in client.search_runs(
            [exp.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{old.info.run_id}'"
        ):
            client.delete_run(child.info.run_id)
        client.delete_run(old.info.run_id)

    results = run.read_results()
    models = json.loads(run.models.read_text()) if run.models.exists() else {}
    data = manifest.get("data", {})
    versions = manifest.get("versions", {})
    tags = {
        UID_TAG: uid,
        "bench.suite": suite["name"],
        "bench.suite_digest": manifest.get("suite_digest", ""),
        "bench.device": manifest.get("device", ""),
        "bench.run_dir": str(run.root.resolve()),
        "mlflow.source.git.commit": manifest.get("git_commit") or "",
        **{f"version.{k}": v for k, v in versions.items()},
    }
    with mlflow.start_run(
        run_name=f"{suite['name']}-{run.root.name}", tags=tags, description=suite.get("description") or None
    ) as parent:
        mlflow.log_params(
            {
                "dataset": data.get("name"),
                "split": data.get("split"),
                "n": data.get("n"),
                "seed": manifest.get("seed"),
                "data_digest": data.get("digest"),
                "models": ",".join(results["model"].unique()),
                "attacks": ",".join(results["attack"].unique()),
            }
        )
        _log_dataset(manifest, suite)
        # samples.parquet and the cells' examples let `bench report --runs ID` rebuild the full report.
        for artifact in (run.suite, run.manifest, run.models, run.results_csv, run.samples):
            if artifact.exists():
                mlflow.log_artifact(str(artifact))
        for examples in sorted((run.root / "cells").glob("*/examples.npz")):
            mlflow.log_artifact(str(examples), artifact_path=f"cells/{examples.parent.name}")
        if (run.root / "report" / "report.html").exists():
            mlflow.log_artifacts(str(run.root / "report"), artifact_path="report")
        mlflow.log_metric("wall_seconds", float(manifest.get("wall_seconds", 0.0)))
        for (model, attack), rows in results.groupby(["model", "attack"], sort=False):
            _log_cell(client, run, str(model), str(attack), rows.sort_values("eps"), models.get(str(model), {}))
        _log_extra_parent(run)
        client.set_tag(parent.info.run_id, COMPLETE_TAG, "true")
        return str(parent.info.run_id)


def _log_extra_parent(run: RunDir) -> None:
    """Extra parent artifacts written by later features (cross-check tables and the like)."""
    import mlflow  # heavy optional (about 1 s): runs without tracking never load it

    for extra in sorted(run.root.glob("crosscheck.*")):
        mlflow.log_artifact(str(extra))
    table_path = run.root / "crosscheck.csv"
    if table_path.exists():
        table = pd.read_csv(table_path)
        mlflow.log_table(table, "crosscheck_table.json")
        verdicts = pair_results(table)
        mlflow.log_metrics({metric_name(pair): float(ok) for pair, ok in verdicts.items()})
        mlflow.log_metric("crosscheck_passed", float(all(verdicts.values())))


def _log_dataset(manifest: dict[str, Any], suite: dict[str, Any]) -> None:
    """``log_input`` of the evaluated samples (the same slice of the split the run used)."""
    import mlflow  # heavy optional (about 1 s), as in every function here: runs without tracking never load it

    data = manifest.get("data", {})
    spec = suite.get("dataset") or {}
    try:
        options = spec.get("options") or {}
        full = load_dataset(data["name"], data["split"], **options)
        evaluated = select(full, offset=int(spec.get("offset") or 0), n=int(data["n"]))
        features, targets = evaluated.x.numpy(), evaluated.y.numpy()
    except Exception:  # data no longer available where the sync runs: log its description only
        features, targets = np.zeros((0,), dtype=np.float32), None
    with warnings.catch_warnings():
        # MLflow cannot tell which local source class a plain path is; either is right here.
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
        dataset = mlflow.data.from_numpy(
            features,
            targets=targets,
            source=str(data.get("source", "bench")),
            name=f"{data.get('name')}-{data.get('split')}",
            digest=data.get("digest"),
        )
    mlflow.log_input(dataset, context="evaluation")


def _log_cell(
    client: Any, run: RunDir, model: str, attack: str, rows: pd.DataFrame, model_info: dict[str, Any]
) -> None:
    import mlflow  # heavy optional (about 1 s): runs without tracking never load it
    from mlflow.entities import Metric  # heavy optional (about 1 s): runs without tracking never load it

    first = rows.iloc[0]
    params = json.loads(first["attack_params"])
    with mlflow.start_run(
        run_name=f"{model}/{attack}", nested=True, tags={"bench.model": model, "bench.attack": attack}
    ) as child:
        mlflow.log_params(
            {
                "model": model,
                "attack": str(first["attack_name"]),
                "norm": str(first["norm"]),
                "targeted": bool(first["targeted"]),
                "epsilons": ",".join(eps_label(e) for e in rows["eps"]),
                "checkpoint_key": model_info.get("cache_key", ""),
                **{f"attack.{k}": v for k, v in params.items()},
            }
        )
        now = int(time.time() * 1000)
        batch = [Metric("clean_accuracy", float(first["clean_accuracy"]), now, 0)]
        for _, row in rows.iterrows():
            step = eps_step(float(row["eps"]))
            for name in ("robust_accuracy", "attack_success_rate", "robust_accuracy_pointwise"):
                value = float(row[name])
                if value == value:  # skip NaN (no clean-correct sample)
                    batch.append(Metric(name, value, now, step))
            batch.append(
                Metric(f"robust_accuracy_eps_{eps_label(float(row['eps']))}", float(row["robust_accuracy"]), now, 0)
            )
        batch.append(Metric("robust_accuracy_auc", stats.curve_auc(rows["eps"], rows["robust_accuracy"]), now, 0))
        batch.append(Metric("grad_evals", float(rows["grad_evals"].sum()), now, 0))
        batch.append(Metric("attack_seconds", float(rows["seconds"].sum()), now, 0))
        for i in range(0, len(batch), 900):
            client.log_batch(child.info.run_id, metrics=batch[i : i + 900])
        _log_and_close(curve_figure(rows, hue="model", title=f"{model} / {attack}"), "robust_accuracy_curve.png")
        table = rows[
            [
                "eps",
                "robust_accuracy",
                "ci_low",
                "ci_high",
                "robust_accuracy_pointwise",
                "attack_success_rate",
                "mean_linf",
                "mean_l2",
                "grad_evals",
                "seconds",
            ]
        ]
        mlflow.log_table(table.reset_index(drop=True), "robust_accuracy_table.json")
        examples = run.read_examples(f"{model}__{attack}")
        if examples is not None and examples["x_adv"].shape[1] > 0:
            _log_and_close(example_grid(examples, title=f"{model} / {attack}"), "adversarial_examples.png")


def _log_and_close(fig: Any, name: str) -> None:
    """``log_figure``, then close it: pyplot keeps every open figure alive, one per cell and kind otherwise."""
    import matplotlib.pyplot as plt  # heavy optional, like mlflow: only a sync draws
    import mlflow  # heavy optional (about 1 s): runs without tracking never load it

    try:
        mlflow.log_figure(fig, name)
    finally:
        plt.close(fig)
