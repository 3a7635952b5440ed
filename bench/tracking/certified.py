"""The nested MLflow run of one (model, certifier) cell: the bracket's lower side on the attacks' step axis.

Each certification cell of a run (``certified.csv``) becomes a nested run ``<model> · <certifier>`` beside the
attack cells' runs: ``certified_accuracy_<norm>`` (and the attacked upper side ``attacked_accuracy_<norm>`` and
``bracket_gap_<norm>``) per eps with ``step = round(eps * scale)``, the same axis as the attacks'
``robust_accuracy_<norm>``, so one MLflow chart overlays the certified and the attacked curves.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

from bench import stats
from bench.certified import read_certified
from bench.rundir import RunDir
from bench.tracking.cells import log_batches, log_files
from bench.tracking.layout import CURVE_SCALE, cell_fields, cell_run_name, curve_step


def certify_metrics(rows: pd.DataFrame, norm: str) -> list[tuple[str, float, int]]:
    """``(name, value, step)`` of one certification cell: its curves on the norm's axis and its scalars."""
    out: list[tuple[str, float, int]] = [("clean_accuracy", float(rows["clean_accuracy"].iloc[0]), 0)]
    for eps, certified, attacked, gap in rows[["eps", "certified_accuracy", "attacked_accuracy", "gap"]].to_numpy(
        dtype=float
    ):
        step = curve_step(norm, float(eps))
        for name, value in (("certified_accuracy", certified), ("attacked_accuracy", attacked), ("bracket_gap", gap)):
            if math.isfinite(value):
                out.append((f"{name}_{norm}", float(value), step))
    ref = rows[(rows["eps"] - stats.REFERENCE_EPS.get(norm, math.nan)).abs() < 1e-12]
    if not ref.empty:
        out.append(("certified_accuracy_ref", float(ref["certified_accuracy"].iloc[0]), 0))
    out.append(("certify_seconds", float(rows["seconds"].sum()), 0))
    return out


def log_certify_cells(
    client: Any,
    run: RunDir,
    *,
    experiment_id: str,
    parent_id: str,
    manifest: dict[str, Any],
    models: dict[str, Any],
    when: int,
) -> list[str]:
    """A nested run per (model, certifier) of ``run``'s ``certified.csv`` (none without it); returns their ids."""
    from mlflow.entities import Metric, Param  # heavy optional (about 1 s): only a sync needs it

    certified = read_certified(run)
    if certified is None:
        return []
    ids = []
    for (model, certifier), rows in certified.groupby(["model", "certifier"], sort=False):
        rows = rows.sort_values("eps")
        first = rows.iloc[0]
        norm = str(first["norm"])
        if norm not in CURVE_SCALE:
            continue
        fields = cell_fields(
            model=str(model),
            attack=str(certifier),
            norm=norm,
            data=manifest.get("data", {}),
            seed=first["seed"],
            model_info=models.get(str(model), {}),
        )
        fields = {("certifier" if k == "attack" else k): v for k, v in fields.items()}
        tags = {"mlflow.parentRunId": parent_id, "bench.model": str(model), "bench.certifier": str(certifier)}
        child = client.create_run(
            experiment_id, start_time=when, tags={**tags, **fields}, run_name=cell_run_name(str(model), str(certifier))
        )
        run_id = child.info.run_id
        params = {
            **fields,
            "certifier_name": str(first["certifier_name"]),
            "kind": str(first["kind"]),
            **{f"certifier.{k}": str(v)[:500] for k, v in json.loads(str(first["certifier_params"])).items()},
        }
        metrics = [Metric(name, value, when, step) for name, value, step in certify_metrics(rows, norm)]
        log_batches(client, run_id, params=[Param(k, v) for k, v in params.items()], metrics=metrics)
        table = rows.drop(columns=["suite", "certifier_params"]).reset_index(drop=True)
        log_files(client, run_id, {"certified_table.json": table.to_json(orient="split", index=False).encode()})
        client.set_terminated(run_id, "FINISHED", end_time=when)
        ids.append(str(run_id))
    return ids
