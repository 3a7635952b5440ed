"""One MLflow run for a :func:`bench.evaluate` call: the same metrics and table as a suite's nested cell run."""

from __future__ import annotations

import json

import pandas as pd

from bench.tracking.cells import TABLE_COLUMNS, cell_metrics
from bench.tracking.client import fail_fast, tracking_uri
from bench.types import eps_label


def log_evaluation(rows: pd.DataFrame, *, experiment: str, run_name: str) -> str:
    """Log the per-eps table of one (model, attack) evaluation as a run of ``experiment``; returns its id.

    Params: model, attack, norm, targeted, n, seed, epsilons and the attack's
    hyperparameters (``attack.<name>``); metrics as a suite cell's
    (:func:`bench.tracking.cells.cell_metrics`: the curve ``robust_accuracy_<norm>``,
    the AUCs, the costs); the table as ``robust_accuracy_table.json``.
    """
    import mlflow  # heavy optional (about 1 s): only when the caller asks for tracking

    fail_fast()
    mlflow.set_tracking_uri(tracking_uri())
    mlflow.set_experiment(experiment)
    first = rows.iloc[0]
    norm = str(first["norm"])
    with mlflow.start_run(run_name=run_name) as run:
        fields = {
            "model": str(first["model"]),
            "attack": str(first["attack"]),
            "norm": norm,
            "targeted": str(bool(first["targeted"])),
            "n": str(int(first["n"])),
            "seed": str(first["seed"]),
            "epsilons": ",".join(eps_label(e) for e in rows["eps"]),
        }
        params = {f"attack.{k}": str(v)[:500] for k, v in json.loads(first["attack_params"]).items()}
        mlflow.log_params({**fields, **params})
        mlflow.set_tags({"bench.model": fields["model"], "bench.attack": fields["attack"], "bench.source": "evaluate"})
        for name, value, step in cell_metrics(rows, norm):
            mlflow.log_metric(name, value, step=step)
        mlflow.log_table(rows[TABLE_COLUMNS].reset_index(drop=True), "robust_accuracy_table.json")
        return str(run.info.run_id)
