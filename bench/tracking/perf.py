"""``bench perf`` documents in MLflow: one run per measurement in the ``perf`` experiment."""

from __future__ import annotations

import re
from typing import Any

from bench.tracking.client import tracking_uri


def log_perf_run(doc: dict[str, Any], *, experiment: str = "perf") -> str:
    """Log every time, ratio and verdict of a ``bench perf`` document as one MLflow run; returns its id."""
    import mlflow  # heavy optional (about 1 s): only when a perf run is logged

    mlflow.set_tracking_uri(tracking_uri())
    mlflow.set_experiment(experiment)
    cfg = doc["config"]
    with mlflow.start_run(run_name=f"perf-{'-'.join(cfg['models'])}-{cfg['n']}") as run:
        mlflow.log_params({k: v for k, v in cfg.items() if k in _PARAMS})
        mlflow.set_tags({"bench.cpu_count": str(doc["environment"]["cpu_count"]), "bench.format": "bench-perf"})
        metrics: dict[str, float] = {}
        for name, m in doc["models"].items():
            metrics |= {f"{name}.{k}_seconds": v for k, v in m["times"].items()}
            metrics |= {f"{name}.{_metric_key(k)}": v for k, v in m["ratios"].items()}
        for name, w in (doc.get("workload") or {}).items():  # P5, the user's workload
            metrics |= {f"{name}.workload.{k}_seconds": v for k, v in w["times"].items()}
            metrics |= {f"{name}.workload.{_metric_key(k)}": v for k, v in w["ratios"].items()}
        for t in doc["targets"]:
            key = _metric_key(f"{t['id']}.{t['model']}.{t['what']}")
            metrics[f"{key}.passed"] = float(t["passed"])
        if doc["harness"] is not None:
            metrics |= {
                f"harness.{k}": float(v)
                for k, v in doc["harness"].items()
                if isinstance(v, int | float) and not isinstance(v, bool)
            }
        for point in (doc.get("parallel") or {}).get("suites", []):  # P6, parallel cells
            stem = point["suite"].replace("\\", "/").rsplit("/", 1)[-1].removesuffix(".yaml")
            for k in ("serial_seconds", "parallel_seconds", "speedup"):
                metrics[f"parallel.{_metric_key(stem)}.{k}"] = float(point[k])
        metrics["peak_rss_gib"] = doc["peak_rss_bytes"] / 1024**3
        mlflow.log_metrics(metrics)
        mlflow.log_dict(doc, "perf.json")
        return str(run.info.run_id)


_PARAMS = ("data", "split", "n", "batch_size", "repeats", "threads", "pgd_eps", "pgd_steps", "rel_step_size")


def _metric_key(text: str) -> str:
    """MLflow metric names allow letters, digits, ``_ - . / space``: ratios are spelled with ``over``."""
    out = text.replace(" / ", "_over_").replace("(", "").replace(")", "").replace("+", "plus").replace("=", "")
    out = "_".join(out.split()).replace("<", "le").replace(">", "ge")
    return re.sub(r"[^A-Za-z0-9_./:-]", "", out)  # anything else MLflow refuses (a comma, a quote) is left out
