"""The model zoo: the ``MODELS`` registry, training recipes and the checkpoint cache.

Public API:

* :data:`MODELS`: name -> :class:`ZooModel` (architecture factory + default recipe).
* :func:`get_model`: a trained model for a data set, from the cache or trained now.
* :func:`build_model`: an untrained architecture for an input shape.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock, Timeout
from torch import nn

from bench import progress
from bench.data import DataSplit
from bench.registry import Registry
from model_zoo import architectures as arch
from model_zoo import reference
from model_zoo.reference import WEIGHTS_MODES, ReferenceEntry, WeightsKind, WeightsMode
from model_zoo.training import (
    CheckpointError,
    Recipe,
    accuracy,
    assign_state_dict,
    cache_dir,
    cache_key,
    load_state_dict,
    save_checkpoint,
)
from model_zoo.training import train as train_model
from model_zoo.weights import WeightsError, read_weights, weights_digest


@dataclass(frozen=True)
class ZooModel:
    """A registered architecture and how to train it."""

    factory: Callable[..., nn.Module]
    recipe: Recipe
    description: str
    recipe_note: str = ""
    kwargs: dict[str, Any] = field(default_factory=dict)


MODELS: Registry[ZooModel] = Registry("model")
log = logging.getLogger(__name__)


def _register(name: str, factory: Callable[..., nn.Module], recipe: Recipe, note: str = "") -> None:
    doc = (factory.__doc__ or "").strip().splitlines()[0]
    MODELS.register(name, ZooModel(factory, recipe, doc, note), description=doc)


# Seed recipes (DESIGN.md), shortened or adjusted where the 4,000-image mnist5k needs it:
# each note says how and why.
_register("mlp", arch.mlp, Recipe(optimizer="adam", lr=0.01, weight_decay=1e-6, epochs=15, batch_size=100))
_register(
    "mlp3",
    arch.mlp3,
    Recipe(optimizer="adam", lr=1e-3, epochs=10, batch_size=100),
    "no seed recipe (the seed ships weights); Adam 1e-3",
)
_register(
    "lenet",
    arch.lenet,
    Recipe(optimizer="sgd", lr=0.01, momentum=0.9, epochs=10, batch_size=32),
    "seed: SGD lr 0.001, 5 epochs at batch 4 on 60k; here lr 0.01, batch 32, 10 epochs on 4k (same steps scale)",
)
_register(
    "cnn",
    arch.cnn,
    Recipe(optimizer="sgd", lr=0.01, momentum=0.9, epochs=10, batch_size=32),
    "seed: SGD lr 0.001, 5 epochs at batch 4 on 60k; here lr 0.01, batch 32, 10 epochs on 4k",
)
_register(
    "convnet",
    arch.convnet,
    Recipe(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4, epochs=15, batch_size=64, schedule="cosine"),
    "seed: lr 0.1; here 0.05 (batch 64 on 4k is noisier)",
)
_register(
    "convnet_bn",
    arch.convnet_bn,
    Recipe(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4, epochs=15, batch_size=64, schedule="cosine"),
    "seed: lr 0.1; here 0.05 (batch 64 on 4k is noisier)",
)
_register("cifar_cnn", arch.cifar_cnn, Recipe(optimizer="adam", lr=1e-3, epochs=10, batch_size=64))
_register(
    "lenet_quantized",
    arch.lenet_quantized,
    Recipe(optimizer="sgd", lr=0.01, momentum=0.9, epochs=10, batch_size=32),
    "lenet's recipe, trained through the quantization layer (on 6-level inputs); a gradient-masking defense",
)
# Adversarially trained (model_zoo/adversarial.py): PGD-AT with the harness's own PGD as the inner attack.
_register(
    "lenet_at",
    arch.lenet,
    Recipe(
        optimizer="adam",
        lr=2e-3,
        epochs=6,
        batch_size=32,
        schedule="cosine",
        adv="pgd",
        adv_eps=0.2,
        adv_steps=2,
        adv_rel_step_size=0.75,
        adv_ramp_epochs=2,
    ),
    "PGD-AT at linf eps 0.2 for mnist5k: 2 inner steps of 0.75 eps from a random start, eps ramped up over the "
    "first 2 of 6 epochs, Adam with cosine decay (a budget sized for a shared 2-core CPU)",
)
_register(
    "convnet_at",
    arch.convnet,
    Recipe(
        optimizer="adam",
        lr=1e-3,
        epochs=6,
        batch_size=128,
        schedule="cosine",
        adv="pgd",
        adv_eps=0.1,
        adv_steps=2,
        adv_rel_step_size=0.75,
        adv_ramp_epochs=1,
    ),
    "PGD-AT at linf eps 0.1 for Fashion-MNIST's 60,000 training images: 2 inner steps of 0.75 eps from a random "
    "start, eps ramped up over the first of 6 epochs, Adam with cosine decay",
)

_register(
    "lenet_crown",
    arch.small_conv,
    Recipe(
        optimizer="adam",
        lr=1e-3,
        epochs=60,
        batch_size=64,
        schedule="cosine",
        adv="crown_ibp",
        adv_eps=0.15,
        adv_ramp_epochs=30,
    ),
    "CROWN-IBP at linf eps 0.15 (certified at 0.1): eps, kappa (1 -> 0.5) and beta (1 -> 0) ramped over 30 of 60 "
    "epochs, Adam, cosine; small_conv: strided convolutions, no max-pool (bounds follow it tightly)",
)
_register(
    "lenet_smooth",
    arch.lenet,
    Recipe(optimizer="sgd", lr=0.01, momentum=0.9, epochs=20, batch_size=32, schedule="cosine", noise_sigma=0.25),
    "lenet trained on inputs with Gaussian noise of sigma 0.25, the base model of randomized smoothing (Cohen et al.)",
)


def build_model(name: str, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """An untrained model of the registered architecture ``name``."""
    entry = MODELS.get(name)
    return entry.factory(tuple(input_shape), num_classes, **entry.kwargs)


def freeze(model: nn.Module, device: torch.device) -> nn.Module:
    """Eval mode, on ``device``, parameters not requiring gradients (attacks need input gradients only)."""
    model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@dataclass(frozen=True)
class TrainedModel:
    """A zoo model ready for evaluation, with where it came from.

    ``weights_sha256`` is the weights digest (:mod:`model_zoo.weights`); ``weights`` says whether they
    equal the zoo's reference weights (``"reference"``) or were trained on this machine by the recipe
    (``"retrained"``), and ``weights_note`` why, in one sentence.
    """

    name: str
    model: nn.Module
    checkpoint: Path
    key: str
    recipe: Recipe
    trained_now: bool
    info: dict[str, Any]
    weights_sha256: str = ""
    weights: WeightsKind = "retrained"
    weights_note: str = ""


def resolve_recipe(name: str, overrides: dict[str, Any] | None = None) -> Recipe:
    recipe = MODELS.get(name).recipe
    return recipe.replace(**overrides) if overrides else recipe


def checkpoint_path(name: str, dataset: str, key: str) -> Path:
    return cache_dir() / f"{name}-{dataset}-{key}.pt"


def model_key(name: str, dataset: str, train: DataSplit, recipe: Recipe, seed: int) -> str:
    """The checkpoint key of a zoo entry: architecture, data set and its content, recipe, seed."""
    return cache_key(
        arch=name,
        dataset=dataset,
        data=train.digest,
        shape=list(train.input_shape),
        classes=train.num_classes,
        recipe=recipe.as_dict(),
        seed=seed,
    )


def get_model(
    name: str,
    dataset: str,
    *,
    train: DataSplit,
    seed: int = 0,
    device: torch.device | str = "cpu",
    recipe: dict[str, Any] | None = None,
    progress_desc: str | None = None,
    weights: WeightsMode = "reference",
) -> TrainedModel:
    """A trained ``name`` for ``dataset``: its reference weights, else from the cache or trained now and cached.

    ``train`` is the data set's train split (the caller loads it: the zoo never
    loads data itself), ``x`` of shape ``(N, C, H, W)`` in its bounds. The cache
    key covers the architecture, the data set's name, the train split's content
    digest, shape and classes, the recipe and the seed; the reference weights
    (:mod:`model_zoo.reference`) are found by the same key. ``weights="retrain"``
    skips them and trains by the recipe (or reads the model trained here before).
    """
    if weights not in WEIGHTS_MODES:
        raise ValueError(f"weights: {weights!r} is not allowed (allowed: {', '.join(WEIGHTS_MODES)})")
    device = torch.device(device)
    resolved = resolve_recipe(name, recipe)
    key = model_key(name, dataset, train, resolved, seed)
    path = checkpoint_path(name, dataset, key)
    # The initial weights come from the seed too: without this the first model a process builds
    # would start from an unseeded global generator and differ from run to run.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(name, train.input_shape, train.num_classes)
    entry = reference.reference_for(key)
    ref_path = entry.locate() if entry is not None and weights == "reference" else None
    if entry is not None and ref_path is not None:
        return _load_reference(model, name, resolved, entry, ref_path, device)
    if path.exists():  # written atomically: present means complete (and a read-only cache needs no lock)
        trained = _load_cached(model, name, dataset, path, key, resolved, device)
    else:
        # Two runs on one empty cache train each model once: the second waits here, then loads the checkpoint.
        with _checkpoint_lock(path, name, dataset):
            if path.exists():
                trained = _load_cached(model, name, dataset, path, key, resolved, device)
            else:
                trained = _train_and_save(model, name, dataset, train, path, key, resolved, seed, device, progress_desc)
    return _with_provenance(trained, entry, weights)


def _load_reference(
    model: nn.Module, name: str, recipe: Recipe, entry: ReferenceEntry, path: Path, device: torch.device
) -> TrainedModel:
    try:
        state, _ = read_weights(path, expected_sha256=entry.sha256)
    except WeightsError as exc:
        raise CheckpointError(f"reference weights of {name!r} on {entry.dataset!r}: {exc}") from None
    assign_state_dict(model, state, source=str(path))
    log.info("loaded the reference weights of %s on %s (%s)", name, entry.dataset, path)
    info = {"architecture": name, "dataset": entry.dataset, "recipe": entry.recipe, "seed": entry.seed}
    note = f"reference weights sha256:{entry.short} ({path.name})"
    return TrainedModel(
        name, freeze(model, device), path, entry.key, recipe, False, info, entry.sha256, "reference", note
    )


def _with_provenance(trained: TrainedModel, entry: ReferenceEntry | None, weights: WeightsMode) -> TrainedModel:
    """``trained`` (from the cache or trained now) with its digest and whether it equals the reference."""
    digest = weights_digest(trained.model)
    how = "trained now" if trained.trained_now else "trained earlier on this machine (checkpoint cache)"
    if entry is not None and digest == entry.sha256:
        kind: WeightsKind = "reference"
        note = f"{how} by the recipe, bit-identical to the reference weights sha256:{entry.short}"
    elif entry is None:
        kind, note = "retrained", f"{how} by the recipe: no reference weights for this recipe, seed and training data"
    elif weights == "retrain":
        kind, note = "retrained", f"{how} by the recipe, as the suite asks (weights: retrain)"
    else:
        kind = "retrained"
        note = (
            f"{how} by the recipe: the reference weights sha256:{entry.short} are not installed here "
            "(`bench zoo import FILE`)"
        )
    if entry is not None and kind == "retrained":
        note += f"; its digest differs from the reference's (sha256:{entry.short})"
    return replace(trained, weights_sha256=digest, weights=kind, weights_note=note)


@contextlib.contextmanager
def _checkpoint_lock(path: Path, name: str, dataset: str) -> Iterator[None]:
    """Hold the file lock ``<checkpoint>.lock``; waiting for it says so (the run's progress and the log)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path) + ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        message = f"waiting for another process training {name!r} on {dataset!r} ({path.name})"
        log.info(message)
        progress.note(message)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _load_cached(
    model: nn.Module, name: str, dataset: str, path: Path, key: str, recipe: Recipe, device: torch.device
) -> TrainedModel:
    try:
        load_state_dict(model, path)
    except CheckpointError as exc:
        # Not retrained silently: the file may be a model someone trained for hours and can still repair.
        raise CheckpointError(
            f"{exc}; it is the cached checkpoint of {name!r} on {dataset!r}: delete {path} "
            f"(and {path.with_suffix('.json').name}) to retrain it, or restore the file"
        ) from None
    log.info("loaded %s on %s from the cache (%s)", name, dataset, path)
    return TrainedModel(name, freeze(model, device), path, key, recipe, False, _read_meta(path))


def _train_and_save(
    model: nn.Module,
    name: str,
    dataset: str,
    train: DataSplit,
    path: Path,
    key: str,
    resolved: Recipe,
    seed: int,
    device: torch.device,
    progress_desc: str | None,
) -> TrainedModel:
    stats = train_model(
        model,
        train.x,
        train.y,
        resolved,
        seed=seed,
        device=device,
        desc=progress_desc or f"train {name} on {dataset}",
        bounds=train.bounds,
    )
    info = {
        "architecture": name,
        "dataset": dataset,
        "train_digest": train.digest,
        "recipe": resolved.as_dict(),
        "seed": seed,
        "parameters": sum(p.numel() for p in model.parameters()),
        **stats,
    }
    save_checkpoint(model, path, info)
    log.info("trained %s on %s (%s)", name, dataset, path)
    return TrainedModel(name, freeze(model, device), path, key, resolved, True, info)


def _read_meta(path: Path) -> dict[str, Any]:
    meta = path.with_suffix(".json")
    try:
        return dict(json.loads(meta.read_text()))
    except (OSError, ValueError):
        return {}


__all__ = [
    "MODELS",
    "WEIGHTS_MODES",
    "CheckpointError",
    "Recipe",
    "TrainedModel",
    "WeightsKind",
    "WeightsMode",
    "ZooModel",
    "accuracy",
    "build_model",
    "freeze",
    "get_model",
    "model_key",
    "resolve_recipe",
]
