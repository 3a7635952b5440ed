"""The nested MLflow run of one (model, attack) cell and the parent's per-suite comparison figure.

Logged through :class:`mlflow.tracking.MlflowClient` with explicit run ids, so
each nested run can carry the cell's own start and end time (its Duration
column is the cell's time, not the logging's).
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from bench import limits, stats
from bench.rundir import RunDir, cell_id
from bench.tracking.layout import cell_fields, cell_run_name, curve_metric, curve_step
from bench.types import eps_label
from reports.montage import example_grid, png_bytes

TABLE_FILE = "robust_accuracy_table.json"
"""The cell's curve as a table artifact, in the format of ``MlflowClient.log_table``."""

TABLE_COLUMNS = [
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


def cell_metrics(rows: pd.DataFrame, norm: str) -> list[tuple[str, float, int]]:
    """``(name, value, step)`` of a cell: the curves on their norm's axis and the scalars of the run list."""
    first = rows.iloc[0]
    out: list[tuple[str, float, int]] = [("clean_accuracy", float(first["clean_accuracy"]), 0)]
    robust, success = curve_metric(norm), curve_metric(norm, "attack_success_rate")
    if robust is None or success is None:  # unbounded (norm none): one point, no axis to draw it on
        for name in ("robust_accuracy", "attack_success_rate"):
            value = float(rows[name].iloc[-1])
            if value == value:
                out.append((name, value, 0))
    else:
        columns = rows[["eps", "robust_accuracy", "attack_success_rate"]].to_numpy(dtype=float)
        for eps, robust_accuracy, success_rate in columns:
            step = curve_step(norm, float(eps))
            for name, value in ((robust, float(robust_accuracy)), (success, float(success_rate))):
                if value == value:  # skip NaN (no clean-correct sample)
                    out.append((name, value, step))
        ref = stats.reference_auc(rows["eps"], rows["robust_accuracy"], norm)
        if ref.value == ref.value:
            out.append(("robust_accuracy_auc", ref.value, 0))
        out.append(("robust_accuracy_auc_suite_range", stats.curve_auc(rows["eps"], rows["robust_accuracy"]), 0))
        # the bisected median minimal eps (``minimal_eps: true``), in the norm's units like the curve;
        # none when more than half the samples are never fooled (``inf``: MLflow charts no infinity)
        median = float(rows["median_min_eps"].iloc[0]) if "median_min_eps" in rows.columns else math.nan
        if math.isfinite(median):
            out.append((f"median_min_eps_{norm}", median, 0))
    out.append(("grad_evals", float(rows["grad_evals"].sum()), 0))
    out.append(("attack_seconds", float(rows["seconds"].sum()), 0))
    return out


def log_cell(
    client: Any,
    run: RunDir,
    *,
    experiment_id: str,
    parent_id: str,
    rows: pd.DataFrame,
    manifest: dict[str, Any],
    model_info: dict[str, Any],
    span: tuple[int, int],
    curve_png: Callable[[], bytes | None],
) -> str:
    """One nested run ``<model> · <attack>``, started and ended at ``span`` (ms); returns its id.

    ``curve_png``: returns the cell's curve PNG, or ``None`` for an unbounded attack (it may wait
    for the curve to be drawn: :mod:`reports.drawing`).
    """
    from mlflow.entities import Metric, Param  # heavy optional (about 1 s): only a sync needs it
    from mlflow.utils.mlflow_tags import MLFLOW_LOGGED_ARTIFACTS

    first = rows.iloc[0]
    model, attack, norm = str(first["model"]), str(first["attack"]), str(first["norm"])
    fields = cell_fields(
        model=model, attack=attack, norm=norm, data=manifest.get("data", {}), seed=first["seed"], model_info=model_info
    )
    tags = {
        "mlflow.parentRunId": parent_id,
        "bench.model": model,
        "bench.attack": attack,
        **fields,
        # what MlflowClient.log_table records (so the UI lists the table), set here rather than by
        # log_table's own get_run, list_artifacts and set_tag calls: a fifth of a sync's time
        MLFLOW_LOGGED_ARTIFACTS: json.dumps([{"path": TABLE_FILE, "type": "table"}]),
    }
    child = client.create_run(experiment_id, start_time=span[0], tags=tags, run_name=cell_run_name(model, attack))
    run_id = child.info.run_id
    attack_params = json.loads(first["attack_params"])
    params = {
        **fields,
        "attack_name": str(first["attack_name"]),
        "targeted": str(bool(first["targeted"])),
        "epsilons": ",".join(eps_label(e) for e in rows["eps"]),
        "checkpoint_key": str(model_info.get("cache_key", "")),
        **{f"attack.{k}": str(v)[:500] for k, v in attack_params.items()},
    }
    log_batches(
        client,
        run_id,
        params=[Param(k, v) for k, v in params.items()],
        metrics=[Metric(name, value, span[1], step) for name, value, step in cell_metrics(rows, norm)],
    )
    table = rows[TABLE_COLUMNS].reset_index(drop=True)
    files: dict[str, bytes] = {
        # the file MlflowClient.log_table writes for a new table
        TABLE_FILE: table.to_json(orient="split", index=False, date_format="iso").encode(),
    }
    curve = curve_png()
    if curve is not None:
        files["robust_accuracy_curve.png"] = curve
    grid = _examples_png(run, model, attack)
    if grid is not None:
        files["adversarial_examples.png"] = grid
    log_files(client, run_id, files)  # one call for the cell's files
    client.set_terminated(run_id, "FINISHED", end_time=span[1])
    return str(run_id)


def log_files(client: Any, run_id: str, files: dict[str, bytes]) -> None:
    """``files`` (artifact name -> content) as artifacts of ``run_id``, in one ``log_artifacts`` call."""
    with tempfile.TemporaryDirectory(prefix="bench-artifacts-") as tmp:
        for name, content in files.items():
            (Path(tmp) / name).write_bytes(content)
        client.log_artifacts(run_id, tmp)


def _examples_png(run: RunDir, model: str, attack: str) -> bytes | None:
    """The cell's example grid: the report's PNG when it drew one (the examples file is then not read
    again), else drawn from the checked examples file; ``None`` without examples."""
    drawn = report_png(run, f"r1-examples-{cell_id(model, attack)}.png")
    if drawn is not None:
        return drawn
    examples = run.read_examples(cell_id(model, attack))
    if examples is None or examples["x_adv"].shape[1] == 0:
        return None
    return png_bytes(example_grid(examples, title=f"{model} · {attack}"))


REPORT_PNG_BYTES = 16 * 1024**2
"""Largest report figure reused as an MLflow artifact (a grid of 8 eps x 8 CIFAR images is about 1 MB)."""

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def report_png(run: RunDir, name: str) -> bytes | None:
    """The report's PNG ``report/figures/<name>`` of this run directory, or ``None`` to draw it anew.

    The run directory is untrusted input: a link, anything but a regular file, a file over
    :data:`REPORT_PNG_BYTES` or one that is not a PNG is not logged (the figure is drawn instead).
    """
    path = run.root / "report" / "figures" / name
    try:
        if path.is_symlink():
            return None
        data = limits.read_bytes_capped(path, REPORT_PNG_BYTES, what="report figure")
    except (OSError, ValueError):
        return None
    return data if data.startswith(PNG_MAGIC) else None


def log_batches(client: Any, run_id: str, *, params: list[Any], metrics: list[Any]) -> None:
    """``log_batch`` of ``params`` and ``metrics`` in as few calls as MLflow's limits allow
    (100 params, 1,000 entries per call)."""
    while params or metrics:
        head, params = params[:100], params[100:]
        room = 1000 - len(head)
        client.log_batch(run_id, params=head, metrics=metrics[:room])
        metrics = metrics[room:]
