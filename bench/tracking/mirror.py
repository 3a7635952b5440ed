"""Mirror a run directory into MLflow (DESIGN.md, "MLflow layout").

The run directory is the source of truth; this module only copies it. One
parent run per suite execution, one nested run per (model, attack) cell:

* the experiment is tagged a model-training experiment (``mlflow.experimentKind``);
* parent ``<suite> <YYYY-MM-DD HH:MM>``, started and ended at the manifest's
  times: tags (git commit, suite digest, versions, device), params (data set,
  split, n, seed, cells), ``wall_seconds`` and ``cells``, the run directory's
  files and figures, a per-norm comparison figure, ``log_input`` of the data;
* nested ``<model> · <attack>`` (:mod:`bench.tracking.cells`): model, attack,
  norm, data set, n, seed and recipe as params and tags; curves
  ``robust_accuracy_<norm>`` on a per-norm step axis (:mod:`bench.tracking.layout`).

Syncing is idempotent: the parent carries the tag ``bench.run_uid``; a run
directory already mirrored completely is not logged again, and a partial
mirror (tracking failed mid-way) is deleted and redone. Only ``finished`` run
directories whose results match the sha256 recorded in their manifest are
synced (:func:`bench.runstate.verify_finished`); the parent carries their
combined digest (``bench.results_digest``), so a copied run directory with
other results never passes as the original.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.certified import certified_paths
from bench.crosscheck import metric_name, pair_results
from bench.data import load_dataset, select
from bench.rundir import RunDir, RunDirError, RunError, cell_id, open_run_dir
from bench.runstate import verify_finished
from bench.tracking.cells import log_cell, log_files
from bench.tracking.certified import log_certify_cells
from bench.tracking.client import COMPLETE_TAG, UID_TAG, TrackingUnavailable, check_reachable, fail_fast, tracking_uri
from bench.tracking.layout import (
    CURVE_SCALE,
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    epoch_ms,
    parent_run_name,
    weights_fields,
)
from bench.tracking.uploads import Uploads
from reports import drawing
from reports.figures import curve_pngs
from reports.overview import comparison_png
from reports.tables import leaderboard

RESULTS_TAG = "bench.results_digest"
"""Parent tag: the combined sha256 digest of the run directory's results (:func:`bench.runstate.combined_digest`)."""


def sync_run_dir(path: str | Path, *, uri: str | None = None) -> str:
    """Mirror the run directory at ``path`` into MLflow; returns the parent run id.

    Raises :class:`TrackingUnavailable` when the tracking server cannot be
    reached or fails during the sync; before MLflow is asked anything, a run
    that is not ``finished`` raises :class:`~bench.runstate.RunNotFinished`
    and results that do not match their recorded sha256 raise ``RunError``
    (both bad input, not an outage).
    """
    run = open_run_dir(path)
    results_digest = verify_finished(run)
    fail_fast()
    import mlflow  # heavy optional (about 1 s), as in every function here: runs without tracking never load it
    from mlflow.exceptions import MlflowException  # heavy optional (about 1 s): runs without tracking never load it

    uri = uri or tracking_uri()
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    try:
        return _sync(run, results_digest)
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


def time_sync_into_fresh_store(run_dir: str | Path, folder: str | Path) -> float:
    """Seconds to mirror the finished run at ``run_dir`` into a new sqlite store in ``folder`` (``bench perf``'s P4).

    The store is created first, untimed (a one-off of the first run on a machine: MLflow's
    schema migrations); what is timed is the logging of this run's parent, nested runs,
    metrics, figures and report. The tracking URI and ``MLFLOW_TRACKING_URI`` are put back.
    """
    import mlflow  # heavy optional: only P4 measures it

    uri = f"sqlite:///{Path(folder) / 'mlflow.db'}"
    before_env, before = os.environ.get("MLFLOW_TRACKING_URI"), mlflow.get_tracking_uri()
    try:
        mlflow.MlflowClient(uri).search_experiments()  # creates the store
        tick = time.perf_counter()
        sync_run_dir(run_dir, uri=uri)
        return time.perf_counter() - tick
    finally:  # set_tracking_uri also sets the environment variable: put both back
        mlflow.set_tracking_uri(before)
        if before_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = before_env


def _check_same_results(run: RunDir, mirrored: Any, results_digest: str) -> None:
    """A run directory whose run_uid is mirrored already must hold the mirrored results (a changed copy may not)."""
    recorded = mirrored.data.tags.get(RESULTS_TAG)
    if recorded is not None and recorded != results_digest:
        raise RunError(
            f"{run.root}: its run_uid is mirrored already (MLflow run {mirrored.info.run_id}) with other results "
            f"(results digest {recorded}, this directory {results_digest}): a copied run directory whose results "
            "were changed is not that run; rerun the suite into a new run directory"
        )


def _sync(run: RunDir, results_digest: str) -> str:
    import mlflow  # heavy optional (about 1 s): runs without tracking never load it
    from mlflow.tracking import MlflowClient  # heavy optional (about 1 s): runs without tracking never load it

    manifest = run.read_manifest()
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
            _check_same_results(run, old, results_digest)
            return str(old.info.run_id)
    for old in existing:  # a partial mirror from an interrupted sync: redo it whole
        for child in client.search_runs(
            [exp.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{old.info.run_id}'"
        ):
            client.delete_run(child.info.run_id)
        client.delete_run(old.info.run_id)

    results = run.read_results()
    models = run.read_models()
    data = manifest.get("data", {})
    versions = manifest.get("versions", {})
    _mark_model_training(client, exp.experiment_id)
    name = parent_run_name(suite["name"], manifest.get("started"), run.root.name)
    start, end = _run_span(manifest)
    tags = {
        UID_TAG: uid,
        RESULTS_TAG: results_digest,
        "bench.suite": suite["name"],
        "bench.suite_digest": manifest.get("suite_digest", ""),
        "bench.device": manifest.get("device", ""),
        "bench.run_dir": str(run.root.resolve()),
        "mlflow.source.git.commit": manifest.get("git_commit") or "",
        **{f"version.{k}": v for k, v in versions.items()},
        **{f"bench.{k}": v for k, v in weights_fields(manifest.get("weights") or {}, short=True).items()},
    }
    if suite.get("description"):
        tags["mlflow.note.content"] = str(suite["description"]).strip()
    created = client.create_run(exp.experiment_id, start_time=start, tags=tags, run_name=name)
    parent_id = created.info.run_id
    cells = [(key, rows.sort_values("eps")) for key, rows in results.groupby(["model", "attack"], sort=False)]
    with mlflow.start_run(run_id=parent_id):
        mlflow.log_params(
            {
                "dataset": data.get("name"),
                "split": data.get("split"),
                "n": data.get("n"),
                "seed": manifest.get("seed"),
                "data_digest": data.get("digest"),
                "models": ",".join(results["model"].unique()),
                "attacks": ",".join(results["attack"].unique()),
                "cells": len(cells),
                "started": manifest.get("started"),
                "finished": manifest.get("finished"),
                **weights_fields(manifest.get("weights") or {}),
            }
        )
        mlflow.log_metrics(
            {
                "wall_seconds": float(manifest.get("wall_seconds", 0.0)),
                "prepare_seconds": float(manifest.get("prepare_seconds", 0.0)),
                "attack_seconds": float(manifest.get("attack_seconds", 0.0)),
                "cells": float(len(cells)),
            }
        )
        # MLflow calls on a background thread (in order) while this thread reads tables and the
        # drawing process draws the figures
        with Uploads() as uploads:
            uploads.submit(_log_dataset, client, parent_id, manifest, suite)
            # samples.parquet and the cells' examples let `bench report --runs ID` rebuild the full report.
            for artifact in (run.suite, run.manifest, run.models, run.results_csv, run.samples, *certified_paths(run)):
                if artifact.exists():
                    uploads.submit(client.log_artifact, parent_id, str(artifact))
            for examples in sorted((run.root / "cells").glob("*/examples.npz")):
                uploads.submit(client.log_artifact, parent_id, str(examples), f"cells/{examples.parent.name}")
            if (run.root / "report" / "report.html").exists():
                uploads.submit(client.log_artifacts, parent_id, str(run.root / "report"), "report")
            if run.figures.is_dir():
                uploads.submit(client.log_artifacts, parent_id, str(run.figures), "figures")
            # figures on the drawing process when one runs (reports.drawing), else here; the upload
            # thread waits for each one when it comes to log it: the cells' curves first, in batches
            curves = _draw_cell_curves(cells)
            comparison = drawing.submit(
                comparison_png, results, title=f"{name}: robust accuracy per norm", norms=list(CURVE_SCALE)
            )
            seconds = manifest.get("cell_seconds") or {}
            offset = start + int(1000 * float(manifest.get("prepare_seconds") or 0.0))
            for ((model, attack), rows), curve in zip(cells, curves, strict=True):
                cell_ms = int(1000 * float(seconds.get(cell_id(model, attack), 0.0)))
                span = (min(offset, end), min(offset + cell_ms, end)) if end >= start else (offset, offset + cell_ms)
                offset += cell_ms
                uploads.submit(
                    log_cell,
                    client,
                    run,
                    experiment_id=exp.experiment_id,
                    parent_id=parent_id,
                    rows=rows,
                    manifest=manifest,
                    model_info=models.get(str(model), {}),
                    span=span,
                    curve_png=curve,
                )
            uploads.submit(_log_comparison, client, parent_id, comparison)
            uploads.submit(
                log_certify_cells,
                client,
                run,
                experiment_id=exp.experiment_id,
                parent_id=parent_id,
                manifest=manifest,
                models=models,
                when=end,
            )
            board = leaderboard(results, run.read_samples() if run.samples.exists() else None)
            uploads.submit(_log_leaderboard, client, parent_id, board, tags.get("mlflow.note.content", ""))
            # leaving the block waits for every call and raises the first failure (Uploads.__exit__)
        _log_extra_parent(run)
        client.set_tag(parent_id, COMPLETE_TAG, "true")
    client.set_terminated(parent_id, "FINISHED", end_time=end)
    return str(parent_id)


CELL_CURVE_BATCH = 4
"""Cells' curves per call of the drawing process: the upload thread logs the first cells while the
helper draws the next ones (the helper keeps its painter between calls)."""


def _draw_cell_curves(cells: list[tuple[Any, pd.DataFrame]]) -> list[Callable[[], bytes | None]]:
    """Per cell, a call returning its curve PNG titled ``model · attack`` (``None``: an unbounded attack has
    none), drawn in batches of :data:`CELL_CURVE_BATCH` on the drawing process, or all at once here."""
    todo = [
        (i, (rows, f"{key[0]} · {key[1]}"))
        for i, (key, rows) in enumerate(cells)
        if str(rows["norm"].iloc[0]) in CURVE_SCALE
    ]
    getters: list[Callable[[], bytes | None]] = [_no_curve] * len(cells)
    size = CELL_CURVE_BATCH if drawing.running() else max(1, len(todo))
    for first in range(0, len(todo), size):
        batch = todo[first : first + size]
        pending = drawing.submit(curve_pngs, [curve for _, curve in batch], keep=drawing.running())
        for j, (i, _) in enumerate(batch):
            getters[i] = functools.partial(_nth_png, pending, j)
    return getters


def _no_curve() -> None:
    return None


def _nth_png(pending: drawing.Pending[list[bytes]], j: int) -> bytes:
    return pending.result()[j]


def _log_comparison(client: Any, parent_id: str, comparison: drawing.Pending[bytes]) -> None:
    log_files(client, parent_id, {"comparison.png": comparison.result()})


def _run_span(manifest: dict[str, Any]) -> tuple[int, int]:
    """The run's start and end (ms) from the manifest, so MLflow's Duration column is the run's wall time."""
    now = int(time.time() * 1000)
    start = epoch_ms(manifest.get("started"))
    end = epoch_ms(manifest.get("finished"))
    if start is None:
        start = now - int(1000 * float(manifest.get("wall_seconds") or 0.0))
    return start, end if end is not None and end >= start else now


def _mark_model_training(client: Any, experiment_id: str) -> None:
    """Tag the experiment as model training, so MLflow 3's UI opens it on runs and charts, not GenAI traces."""
    experiment = client.get_experiment(experiment_id)
    if experiment.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)


def _log_leaderboard(client: Any, parent_id: str, table: pd.DataFrame, note: str) -> None:
    """The leaderboard (one row per model, :func:`reports.tables.leaderboard`) as a table and in the run's note."""
    client.log_table(parent_id, table, "leaderboard.json")
    shown = table[[c for c in table.columns if not c.endswith("_partial")]]
    lines = ["| " + " | ".join(shown.columns) + " |", "|" + "---|" * len(shown.columns)]
    for row in shown.itertuples(index=False):
        lines.append("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row) + " |")
    board = "\n".join(["**Leaderboard** (worst case over the attacks at each norm's reference eps)", "", *lines])
    client.set_tag(parent_id, "mlflow.note.content", f"{note}\n\n{board}" if note else board)


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


def _log_dataset(client: Any, run_id: str, manifest: dict[str, Any], suite: dict[str, Any]) -> None:
    """``log_inputs`` of the evaluated samples (the same slice of the split the run used) as what
    ``mlflow.log_input(dataset, context="evaluation")`` logs, with the client (no active run needed)."""
    import mlflow  # heavy optional (about 1 s), as in every function here: runs without tracking never load it
    from mlflow.data.dataset_source_registry import get_dataset_source_from_json  # heavy optional, as above
    from mlflow.entities import DatasetInput, InputTag  # heavy optional, as above
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT  # heavy optional, as above

    data = manifest.get("data", {})
    spec = suite.get("dataset") or {}
    try:
        options = spec.get("options") or {}
        full = load_dataset(data["name"], data["split"], **options)
        evaluated = select(full, offset=int(spec.get("offset") or 0), n=int(data["n"]))
        features, targets = evaluated.x.numpy(), evaluated.y.numpy()
    except Exception:  # data no longer available where the sync runs: log its description only
        features, targets = np.zeros((0,), dtype=np.float32), None
    # the source as the "local" kind MLflow resolves a plain description to (resolving it would warn that
    # several kinds fit, and silencing that from this thread would race the main thread's warning filters)
    source = get_dataset_source_from_json(json.dumps({"uri": str(data.get("source", "bench"))}), source_type="local")
    dataset = mlflow.data.from_numpy(
        features,
        targets=targets,
        source=source,
        name=f"{data.get('name')}-{data.get('split')}",
        digest=data.get("digest"),
    )
    entry = DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag(MLFLOW_DATASET_CONTEXT, "evaluation")])
    client.log_inputs(run_id, datasets=[entry])
