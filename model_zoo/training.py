"""Training recipes and the content-addressed checkpoint cache.

A checkpoint is keyed by (architecture, data set digest, recipe, seed), so a
changed recipe or data set trains a new model and the second run of a suite
trains nothing. Checkpoints are plain ``state_dict`` files loaded with
``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import pickle
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from bench import progress
from bench.fsutil import atomic_write_bytes

CACHE_FORMAT = 2  # 2: initial weights seeded (format 1 checkpoints were trained from an unseeded init)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit its architecture."""


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """How a zoo model is trained.

    Args:
        optimizer: "adam" or "sgd".
        lr: learning rate.
        momentum: SGD momentum (ignored by Adam).
        weight_decay: L2 penalty.
        epochs: passes over the training split.
        batch_size: samples per step.
        schedule: "none" or "cosine" (per-step cosine annealing to zero).
    """

    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = 1e-3
    momentum: float = 0.0
    weight_decay: float = 0.0
    epochs: int = 5
    batch_size: int = 64
    schedule: Literal["none", "cosine"] = "none"

    def replace(self, **changes: Any) -> Recipe:
        allowed = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - allowed)
        if unknown:
            raise ValueError(f"unknown recipe field(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def cache_dir() -> Path:
    """Checkpoint cache: ``$BENCH_CACHE`` or ``~/.cache/bench``."""
    root = os.environ.get("BENCH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "bench")
    return Path(root) / "models"


def cache_key(**parts: Any) -> str:
    blob = json.dumps({"format": CACHE_FORMAT, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def save_checkpoint(model: nn.Module, path: Path, meta: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
    atomic_write_bytes(path, buf.getvalue())
    atomic_write_bytes(path.with_suffix(".json"), json.dumps(meta, indent=2, sort_keys=True).encode())


def load_state_dict(model: nn.Module, path: Path) -> None:
    """Load a ``state_dict`` file into ``model`` safely (``weights_only=True``), checking every shape."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's own text is a page of advice to unpickle anyway: refuse briefly instead.
        found = re.search(r"GLOBAL (\S+)", str(exc))
        what = f" ({found.group(1)})" if found else ""
        raise CheckpointError(
            f"checkpoint {path}: cannot be read as a weights-only state_dict: it holds pickled Python objects{what}, "
            "which are never unpickled; save model.state_dict() (a dict of tensors) instead"
        ) from None
    except Exception as exc:  # torch raises many types for corrupt files
        raise CheckpointError(f"checkpoint {path}: cannot be read as a weights-only state_dict ({exc})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path}: expected a state_dict (dict of tensors), got {type(state).__name__}")
    assign_state_dict(model, state, source=str(path))


def assign_state_dict(model: nn.Module, state: dict[str, Any], *, source: str) -> None:
    """Copy tensors into ``model``; raise naming the first missing, unexpected or mis-shaped tensor."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {source}: does not match the architecture "
            f"(missing: {', '.join(missing) or 'none'}; unexpected: {', '.join(unexpected) or 'none'})"
        )
    for key, tensor in own.items():
        value = state[key]
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"checkpoint {source}: entry {key!r} is not a tensor")
        if tuple(value.shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"checkpoint {source}: tensor {key!r} has shape {tuple(value.shape)}, "
                f"the architecture expects {tuple(tensor.shape)}"
            )
    model.load_state_dict({k: state[k] for k in own})


def _optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    if recipe.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)


def train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    recipe: Recipe,
    *,
    seed: int,
    device: torch.device,
    desc: str = "train",
) -> dict[str, float]:
    """Train ``model`` on ``x`` ``(N, C, H, W)`` in [0, 1], ``y`` ``(N,)`` with ``recipe``; deterministic for a seed.

    Returns ``{"train_accuracy": ..., "train_loss": ..., "seconds": ...}`` of the last epoch.
    """
    torch.manual_seed(seed)
    model.to(device).train()
    opt = _optimizer(model, recipe)
    steps_per_epoch = (len(y) + recipe.batch_size - 1) // recipe.batch_size
    total = steps_per_epoch * recipe.epochs
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total) if recipe.schedule == "cosine" else None
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    loss_sum, correct = 0.0, 0
    bar = tqdm(range(recipe.epochs), desc=desc, unit="epoch", leave=False, disable=None)
    for epoch in bar:
        order = torch.randperm(len(y), generator=gen)
        loss_sum, correct = 0.0, 0
        for i in range(steps_per_epoch):
            idx = order[i * recipe.batch_size : (i + 1) * recipe.batch_size]
            xb, yb = x[idx].to(device), y[idx].to(device)
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            loss_sum += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == yb).sum())
        bar.set_postfix(loss=f"{loss_sum / len(y):.4f}", acc=f"{correct / len(y):.3f}")
        progress.epoch_done(desc, epoch + 1, recipe.epochs, loss_sum / max(len(y), 1), correct / max(len(y), 1))
    model.eval()
    return {
        "train_loss": loss_sum / max(len(y), 1),
        "train_accuracy": correct / max(len(y), 1),
        "seconds": time.perf_counter() - start,
    }


@torch.no_grad()
def accuracy(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, device: torch.device, batch_size: int = 1000
) -> float:
    """Top-1 accuracy of ``model`` on ``(x, y)``."""
    model.eval()
    correct = 0
    for i in range(0, len(y), batch_size):
        correct += int((model(x[i : i + batch_size].to(device)).argmax(1).cpu() == y[i : i + batch_size]).sum())
    return correct / max(len(y), 1)
