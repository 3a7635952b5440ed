"""Models of a suite: zoo models trained (or read from the checkpoint cache) and external ones loaded.

Every model is prepared in the main process, so parallel workers never race on
the checkpoint cache; a worker gets a picklable :class:`ModelRef` and loads the
model from the cache (a per-process model cache keeps one copy per device).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench import progress
from bench.data import DataSplit, load_dataset
from bench.engine.model_checks import model_checks
from bench.rundir import RunError
from bench.suite import ModelSpec, Suite
from model_zoo import TrainedModel, WeightsMode, freeze, get_model
from model_zoo.external import file_digest, load_external


def resolve_device(requested: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise RunError("device: 'cuda' was requested but no CUDA device is available (use 'auto' or 'cpu')")
    try:
        return torch.device(requested)
    except RuntimeError:
        raise RunError(f"device: {requested!r} is not a device (allowed: auto, cpu, cuda, cuda:N)") from None


def zoo_model(
    name: str,
    dataset: str,
    *,
    seed: int,
    device: torch.device,
    recipe: dict[str, Any] | None = None,
    data_options: dict[str, Any] | None = None,
    progress_desc: str | None = None,
    weights: WeightsMode = "reference",
) -> TrainedModel:
    """The zoo's ``name`` for ``dataset``: its reference weights, else trained on the train split (loaded here)."""
    train = load_dataset(dataset, "train", **(data_options or {}))
    return get_model(
        name,
        dataset,
        train=train,
        seed=seed,
        device=device,
        recipe=recipe,
        progress_desc=progress_desc,
        weights=weights,
    )


_MODEL_CACHE: dict[tuple[Any, ...], nn.Module] = {}


@dataclass(frozen=True)
class ModelRef:
    """How any process gets the same trained model (picklable)."""

    id: str
    name: str
    dataset: str
    seed: int
    recipe: dict[str, Any]
    data_options: dict[str, Any]
    external: dict[str, Any] | None = None  # load_external() keyword arguments for factory/weights models
    # the model checks' gradient_logits_exact: a gradient's logits serve as the clean pass (not in key())
    gradient_logits: bool = False
    weights: WeightsMode = "reference"  # the suite's weights: (zoo models)

    def key(self) -> tuple[Any, ...]:
        return (
            self.name,
            self.dataset,
            self.seed,
            json.dumps(self.recipe, sort_keys=True),
            json.dumps(self.data_options, sort_keys=True),
            json.dumps(self.external, sort_keys=True),
            self.weights,
        )

    def load(self, device: torch.device) -> nn.Module:
        """The model on ``device``, built once per process."""
        cache_key = (*self.key(), str(device))
        if cache_key not in _MODEL_CACHE and self.external is not None:
            _MODEL_CACHE[cache_key] = freeze(load_external(self.name, **self.external), device)
        if cache_key not in _MODEL_CACHE:
            trained = zoo_model(
                self.name,
                self.dataset,
                seed=self.seed,
                device=device,
                recipe=self.recipe,
                data_options=self.data_options,
                weights=self.weights,
            )
            _MODEL_CACHE[cache_key] = trained.model
        return _MODEL_CACHE[cache_key]


def prepare_models(suite: Suite, data: DataSplit, device: torch.device) -> tuple[dict[str, ModelRef], dict[str, Any]]:
    """Train or load every model; record clean accuracy and output checks (``models.json``)."""
    refs: dict[str, ModelRef] = {}
    info: dict[str, Any] = {}
    for spec in suite.models:
        if spec.external:
            refs[spec.id], info[spec.id] = prepare_external(spec, suite, data, device)
            continue
        ref = ModelRef(
            spec.id,
            spec.name,
            suite.dataset.name,
            suite.seed,
            dict(spec.recipe),
            dict(suite.dataset.options),
            weights=suite.weights,
        )
        start = time.perf_counter()
        trained = zoo_model(
            spec.name,
            suite.dataset.name,
            seed=suite.seed,
            device=device,
            recipe=ref.recipe,
            data_options=ref.data_options,
            progress_desc=f"train {spec.id}",
            weights=suite.weights,
        )
        _say_weights(spec.id, trained)
        _MODEL_CACHE[(*ref.key(), str(device))] = trained.model
        checks = model_checks(trained.model, spec.id, suite, data, device)
        refs[spec.id] = replace(ref, gradient_logits=checks["gradient_logits_exact"])
        info[spec.id] = {
            "name": spec.name,
            "checkpoint": str(trained.checkpoint),
            "cache_key": trained.key,
            "trained_now": trained.trained_now,
            "weights": trained.weights,
            "weights_sha256": trained.weights_sha256,
            "weights_note": trained.weights_note,
            "recipe": trained.recipe.as_dict(),
            **checks,
            "seconds": time.perf_counter() - start,
            "train": {
                k: v
                for k, v in trained.info.items()
                if k in ("train_accuracy", "adv_train_accuracy", "train_loss", "seconds")
            },
        }
    return refs, info


def _say_weights(model_id: str, trained: TrainedModel) -> None:
    """Whether a zoo model runs on its reference weights, on the run's progress (a terminal or a log)."""
    if trained.weights == "reference":
        progress.note(f"{model_id}: reference weights sha256:{trained.weights_sha256[:12]}")
    else:
        progress.note(f"{model_id}: RETRAINED weights sha256:{trained.weights_sha256[:12]} ({trained.weights_note})")


def prepare_external(
    spec: ModelSpec, suite: Suite, data: DataSplit, device: torch.device
) -> tuple[ModelRef, dict[str, Any]]:
    """Build an external model, load its weights (shapes checked) and record clean accuracy."""
    start = time.perf_counter()
    external = {
        "factory": spec.factory,
        "weights": spec.weights,
        "params": dict(spec.params),
        "layout": spec.weights_layout,
        "input_shape": list(data.input_shape),
        "num_classes": data.num_classes,
    }
    ref = ModelRef(spec.id, spec.name, suite.dataset.name, suite.seed, {}, dict(suite.dataset.options), external)
    model = ref.load(device)
    checks = model_checks(model, spec.id, suite, data, device)
    return replace(ref, gradient_logits=checks["gradient_logits_exact"]), {
        "name": spec.name,
        "factory": spec.factory,
        "weights_file": spec.weights,
        "weights_sha256": file_digest(Path(spec.weights)) if spec.weights else None,
        "weights": "external",
        "weights_note": f"the suite's weights file {spec.weights}" if spec.weights else "the factory's own weights",
        "weights_layout": spec.weights_layout,
        "params": dict(spec.params),
        "trained_now": False,
        **checks,
        "seconds": time.perf_counter() - start,
    }
