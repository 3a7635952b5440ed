"""What the MLflow mirror is called and how its curves are indexed (docs/mlflow.md).

Pure functions (no MLflow import): run names, the params/tags of a nested
run, the curve metric and step of each norm, and the review command and URL
that ``bench run`` prints at the end.
"""

from __future__ import annotations

import datetime as _dt
import re
import shlex
from pathlib import Path
from typing import Any

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
"""MLflow 3's kind of a model-training experiment: the UI shows runs, charts and models (not GenAI traces)."""

CURVE_SCALE: dict[str, float] = {"linf": 1000.0, "l2": 100.0, "l0": 1000.0, "patch": 1.0}
"""``step = round(eps * CURVE_SCALE[norm])`` of the curve metrics ``robust_accuracy_<norm>``.

linf: thousandths of the pixel range (0.3 -> 300, 8/255 -> 31); l2: hundredths of a
pixel-unit radius (3.0 -> 300); l0: per mille of the pixel positions (0.05 -> 50);
patch: the patch side in pixels. One metric per norm family, so MLflow's chart of
a metric only ever puts curves of one unit on one x-axis.
"""


def curve_metric(norm: str, kind: str = "robust_accuracy") -> str | None:
    """``robust_accuracy_linf`` and the like; None for a norm without an eps axis (``none``: unbounded)."""
    return f"{kind}_{norm}" if norm in CURVE_SCALE else None


def curve_step(norm: str, eps: float) -> int:
    """The MLflow step of ``eps`` on its norm's curve (see :data:`CURVE_SCALE`)."""
    return round(float(eps) * CURVE_SCALE[norm])


def parent_run_name(suite: str, started: str | None, fallback: str) -> str:
    """``<suite> <YYYY-MM-DD HH:MM>`` (UTC, the manifest's ``started``), else ``<suite> <fallback>``."""
    try:
        when = _dt.datetime.fromisoformat(str(started)).astimezone(_dt.UTC)
    except ValueError:
        return f"{suite} {fallback}"
    return f"{suite} {when:%Y-%m-%d %H:%M}"


def cell_run_name(model: str, attack: str) -> str:
    """``<model> · <attack>``: the nested run's name in the run list."""
    return f"{model} · {attack}"


def epoch_ms(iso: str | None) -> int | None:
    """An ISO time of the manifest as MLflow's milliseconds since the epoch (None if absent or unreadable)."""
    try:
        return int(_dt.datetime.fromisoformat(str(iso)).timestamp() * 1000)
    except ValueError:
        return None


def flatten(prefix: str, value: Any) -> dict[str, str]:
    """``{"recipe": {"epochs": 1}}`` -> ``{"recipe.epochs": "1"}`` (MLflow params and tags are flat strings)."""
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for key, inner in value.items():
            out.update(flatten(f"{prefix}.{key}" if prefix else str(key), inner))
        return out
    if isinstance(value, list | tuple):
        return {prefix: ",".join(str(v) for v in value)}
    return {prefix: "" if value is None else str(value)}


def cell_fields(
    *, model: str, attack: str, norm: str, data: dict[str, Any], seed: Any, model_info: dict[str, Any]
) -> dict[str, str]:
    """What a nested run is logged with as params AND tags, so the run list can filter on each of them.

    ``model, attack, norm, dataset, n, seed``, the model's training recipe flattened
    (``recipe.epochs``, ``recipe.lr``, ...), its parameter count and source, and its weights:
    ``weights`` (reference, retrained or external) and ``weights_sha256``.
    """
    fields = {
        "model": model,
        "attack": attack,
        "norm": norm,
        "dataset": str(data.get("name", "")),
        "split": str(data.get("split", "")),
        "n": str(data.get("n", "")),
        "seed": str(seed),
    }
    if model_info.get("parameters") is not None:
        fields["model.parameters"] = str(model_info["parameters"])
    if model_info.get("source"):
        fields["model.source"] = str(model_info["source"])[:500]
    if model_info.get("weights"):  # reference / retrained / external, and the digest (model_zoo/weights.py)
        fields["weights"] = str(model_info["weights"])
        fields["weights_sha256"] = str(model_info.get("weights_sha256") or "")
    fields.update(flatten("recipe", model_info.get("recipe") or {}))
    return {k: v[:500] for k, v in fields.items()}


def ui_links(uri: str, experiment_id: str, run_id: str, *, port: int = 5000) -> tuple[str | None, str]:
    """The command that serves the MLflow UI over ``uri`` (None for a tracking server) and the run's URL.

    The URL opens the run in the UI's "Model training" layout (``?workflowType=machine_learning``).

    A relative sqlite or file store is made absolute, so the command works from any directory.
    """
    if uri.startswith(("http://", "https://")):
        base = uri.rstrip("/")
        command = None
    else:
        store = uri
        if uri.startswith("sqlite:///"):
            path = uri[len("sqlite:///") :]
            if not path.startswith("/"):
                store = "sqlite:///" + str(Path(path).resolve())
        elif uri.startswith("file:"):
            pass
        elif "://" not in uri:
            store = str(Path(uri).resolve())
        base = f"http://127.0.0.1:{port}"
        command = f"mlflow ui --backend-store-uri {shlex.quote(store)}"
    # workflowType: MLflow 3's UI opens on GenAI pages unless told (a per-browser setting; the URL sets it)
    return command, f"{base}/#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"


def weights_fields(weights: dict[str, Any], *, short: bool = False) -> dict[str, str]:
    """The parent run's ``weights.<model>``: ``"<kind> sha256:<digest>"`` per model (the param); ``short``:
    the kind alone (the tag ``bench.weights.<model>``: the UI cuts a longer chip, model name first)."""
    if not isinstance(weights, dict):  # a run directory may come from someone else
        return {}
    out = {}
    for model, w in weights.items():
        if not isinstance(w, dict) or not _KEY.fullmatch(str(model)):
            continue
        kind, digest = str(w.get("kind") or "unknown"), str(w.get("sha256") or "unknown")
        out[f"weights.{model}"] = (kind if short else f"{kind} sha256:{digest}")[:500]
    return out


_KEY = re.compile(r"[A-Za-z0-9_.\- ]{1,200}")  # what MLflow accepts in a param or tag key
