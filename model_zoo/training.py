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
import math
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

from bench import limits, progress
from bench.fsutil import atomic_write_bytes
from bench.types import Bounds
from model_zoo.adversarial import ADV_MODES, AdversarialLoss
from model_zoo.certified import CERTIFIED_MODES, CertifiedLoss

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
        adv: adversarial training, "none" (default), "pgd" (Madry et al.) or "trades" (Zhang et al.):
            :mod:`model_zoo.adversarial`; or certified training through sound bounds, "ibp" (Gowal et al.)
            or "crown_ibp" (Zhang et al. 2020): :mod:`model_zoo.certified`. The ``adv_*`` fields below apply
            only when it is not "none".
        adv_eps: training radius in pixel units of ``adv_norm`` (> 0).
        adv_norm: "linf" or "l2".
        adv_steps: inner PGD steps per batch (>= 1).
        adv_rel_step_size: inner step as a fraction of eps (> 0).
        adv_ramp_epochs: epochs over which eps grows linearly from 0 (0: no warm-up; at most ``epochs``);
            certified modes ramp kappa (and CROWN-IBP's beta) over the same epochs.
        adv_beta: TRADES' weight of the KL term (> 0; "trades" only).
        adv_kappa_end: certified modes only: the clean loss's weight after the ramp (0 to 1, default 0.5).
        noise_sigma: Gaussian noise augmentation, the standard deviation in pixel units added to every training
            input (default 0: none; randomized smoothing's base models train with the sigma they are certified
            with, Cohen et al. 2019). Not clipped, as in the paper.

    The cache key holds :meth:`as_dict`, which leaves the ``adv_*`` fields out
    of a standard recipe (``adv: none``), ``adv_kappa_end`` out of all but certified ones and ``noise_sigma`` out
    when it is 0, so the checkpoints of earlier recipes keep their keys.
    """

    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = 1e-3
    momentum: float = 0.0
    weight_decay: float = 0.0
    epochs: int = 5
    batch_size: int = 64
    schedule: Literal["none", "cosine"] = "none"
    adv: Literal["none", "pgd", "trades", "ibp", "crown_ibp"] = "none"
    adv_eps: float = 0.0
    adv_norm: Literal["linf", "l2"] = "linf"
    adv_steps: int = 10
    adv_rel_step_size: float = 0.25
    adv_ramp_epochs: int = 0
    adv_beta: float = 6.0
    adv_kappa_end: float = 0.5
    noise_sigma: float = 0.0

    def __post_init__(self) -> None:
        problem = standard_problem(self) or adversarial_problem(self)
        if problem:
            raise ValueError(problem)

    def replace(self, **changes: Any) -> Recipe:
        allowed = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - allowed)
        if unknown:
            raise ValueError(f"unknown recipe field(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """The recipe as JSON-able values; a standard recipe (``adv: none``) without its ``adv_*`` fields."""
        out = dataclasses.asdict(self)
        if self.adv == "none":
            for name in ADV_FIELDS:
                del out[name]
        if self.adv not in CERTIFIED_MODES:
            out.pop("adv_kappa_end", None)
        if self.noise_sigma == 0:
            del out["noise_sigma"]
        return out


ADV_FIELDS = (
    "adv",
    "adv_eps",
    "adv_norm",
    "adv_steps",
    "adv_rel_step_size",
    "adv_ramp_epochs",
    "adv_beta",
    "adv_kappa_end",
)
"""The recipe fields of adversarial training (left out of a standard recipe's :meth:`Recipe.as_dict`)."""
_ADV_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Recipe) if f.name in ADV_FIELDS}


def _number(value: object, *, integer: bool = False) -> bool:
    if isinstance(value, bool) or not isinstance(value, int if integer else int | float):
        return False
    return math.isfinite(value)


OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("none", "cosine")


def standard_problem(recipe: Recipe) -> str | None:
    """A one-line error naming the first invalid standard field of ``recipe`` and what it allows, else ``None``.

    Closed sets for ``optimizer`` and ``schedule``; finite ranges for the numbers; ``epochs`` and
    ``batch_size`` within the caps of :mod:`bench.limits` (an amount of work).
    """
    for name, allowed in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES)):
        if getattr(recipe, name) not in allowed:
            return f"recipe field {name}: {getattr(recipe, name)!r} is not allowed (allowed: {', '.join(allowed)})"
    checks = (
        ("lr", _number(recipe.lr) and recipe.lr > 0, "a finite number > 0"),
        ("momentum", _number(recipe.momentum) and 0 <= recipe.momentum < 1, "a number from 0 to below 1"),
        ("weight_decay", _number(recipe.weight_decay) and recipe.weight_decay >= 0, "a finite number >= 0"),
        (
            "epochs",
            _number(recipe.epochs, integer=True) and 1 <= recipe.epochs <= limits.WORK_CAPS["epochs"],
            f"an integer from 1 to {limits.WORK_CAPS['epochs']:,}",
        ),
        (
            "batch_size",
            _number(recipe.batch_size, integer=True) and 1 <= recipe.batch_size <= limits.BATCH_SIZE,
            f"an integer from 1 to {limits.BATCH_SIZE:,}",
        ),
        (
            "adv_steps",
            _number(recipe.adv_steps, integer=True) and recipe.adv_steps <= limits.WORK_CAPS["adv_steps"],
            f"an integer from 1 to {limits.WORK_CAPS['adv_steps']:,}",
        ),
    )
    for name, ok, allowed in checks:
        if not ok:
            return f"recipe field {name}: must be {allowed}, got {getattr(recipe, name)!r}"
    return None


def adversarial_problem(recipe: Recipe) -> str | None:
    """A one-line error naming the first invalid ``adv*`` field of ``recipe`` and what it allows, else ``None``."""
    modes = (*ADV_MODES, *CERTIFIED_MODES)
    if recipe.adv not in modes:
        return f"recipe field adv: {recipe.adv!r} is not allowed (allowed: {', '.join(modes)})"
    if not (_number(recipe.noise_sigma) and 0 <= recipe.noise_sigma <= 10):
        return f"recipe field noise_sigma: must be a number from 0 to 10 (pixel units), got {recipe.noise_sigma!r}"
    if recipe.adv_norm not in ("linf", "l2"):
        return f"recipe field adv_norm: {recipe.adv_norm!r} is not allowed (allowed: linf, l2)"
    if recipe.adv == "none":
        changed = [n for n in ADV_FIELDS[1:] if getattr(recipe, n) != _ADV_DEFAULTS[n]]
        if changed:
            return f"recipe field {changed[0]}: set, but adv is 'none' (set adv: pgd or adv: trades to use it)"
        return None
    checks = (
        ("adv_eps", _number(recipe.adv_eps) and recipe.adv_eps > 0, "a finite number > 0 (pixel units)"),
        ("adv_steps", _number(recipe.adv_steps, integer=True) and recipe.adv_steps >= 1, "an integer >= 1"),
        ("adv_rel_step_size", _number(recipe.adv_rel_step_size) and recipe.adv_rel_step_size > 0, "a number > 0"),
        (
            "adv_ramp_epochs",
            _number(recipe.adv_ramp_epochs, integer=True) and 0 <= recipe.adv_ramp_epochs <= recipe.epochs,
            f"an integer from 0 to epochs ({recipe.epochs})",
        ),
        ("adv_beta", _number(recipe.adv_beta) and recipe.adv_beta > 0, "a number > 0"),
        ("adv_kappa_end", _number(recipe.adv_kappa_end) and 0 <= recipe.adv_kappa_end <= 1, "a number from 0 to 1"),
    )
    if recipe.adv not in CERTIFIED_MODES and recipe.adv_kappa_end != _ADV_DEFAULTS["adv_kappa_end"]:
        return f"recipe field adv_kappa_end: set, but adv is {recipe.adv!r} (it applies to adv: ibp or crown_ibp)"
    for name, ok, allowed in checks:
        if not ok:
            return f"recipe field {name}: must be {allowed}, got {getattr(recipe, name)!r}"
    return None


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
    bounds: Bounds = Bounds(),
) -> dict[str, float]:
    """Train ``model`` on ``x`` ``(N, C, H, W)`` in ``bounds``, ``y`` ``(N,)`` with ``recipe``; deterministic per seed.

    Returns ``{"train_accuracy": ..., "train_loss": ..., "seconds": ...}`` of the last epoch; an adversarial
    recipe adds ``adv_train_accuracy`` (accuracy on the training examples of the last epoch's inner attack)
    and ``train_accuracy`` is then the clean accuracy of the same batches, before each step; a certified recipe
    adds it too, as the fraction of training samples its bounds verified at the step's eps (before each step).
    """
    torch.manual_seed(seed)
    model.to(device).train()
    opt = _optimizer(model, recipe)
    steps_per_epoch = (len(y) + recipe.batch_size - 1) // recipe.batch_size
    total = steps_per_epoch * recipe.epochs
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total) if recipe.schedule == "cosine" else None
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    adversarial = _adversarial_loss(recipe, bounds=bounds, seed=seed)
    noise = torch.Generator(device=device).manual_seed(seed + 1) if recipe.noise_sigma > 0 else None
    loss_sum, correct, adv_correct = 0.0, 0, 0
    bar = tqdm(range(recipe.epochs), desc=desc, unit="epoch", leave=False, disable=None)
    for epoch in bar:
        order = torch.randperm(len(y), generator=gen)
        loss_sum, correct, adv_correct = 0.0, 0, 0
        for i in range(steps_per_epoch):
            idx = order[i * recipe.batch_size : (i + 1) * recipe.batch_size]
            xb, yb = x[idx].to(device), y[idx].to(device)
            if noise is not None:
                xb = xb + recipe.noise_sigma * torch.randn(xb.shape, generator=noise, device=device, dtype=xb.dtype)
            if isinstance(adversarial, CertifiedLoss):
                eps = adversarial.eps_at(epoch, i, steps_per_epoch)
                loss, logits, adv_logits = adversarial(
                    model, xb, yb, eps=eps, epoch=epoch, step=i, steps=steps_per_epoch
                )
                adv_correct += int((adv_logits.argmax(1) == yb).sum())
            elif adversarial is None:
                logits = model(xb)
                loss = F.cross_entropy(logits, yb)
            else:
                eps = adversarial.eps_at(epoch, i, steps_per_epoch)
                loss, logits, adv_logits = adversarial(model, xb, yb, eps=eps, epoch=epoch, step=i)
                adv_correct += int((adv_logits.argmax(1) == yb).sum())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            loss_sum += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == yb).sum())
        n = max(len(y), 1)
        adv_accuracy = None if adversarial is None else adv_correct / n
        postfix = {"loss": f"{loss_sum / n:.4f}", "acc": f"{correct / n:.3f}"}
        if adv_accuracy is not None:
            postfix["verified" if isinstance(adversarial, CertifiedLoss) else "adv_acc"] = f"{adv_accuracy:.3f}"
        bar.set_postfix(postfix)
        word = "verified" if isinstance(adversarial, CertifiedLoss) else "adversarial"
        progress.epoch_done(
            desc, epoch + 1, recipe.epochs, loss_sum / n, correct / n, adv_accuracy=adv_accuracy, adv_word=word
        )
    model.eval()
    stats = {
        "train_loss": loss_sum / max(len(y), 1),
        "train_accuracy": correct / max(len(y), 1),
        "seconds": time.perf_counter() - start,
    }
    if adversarial is not None:
        stats["adv_train_accuracy"] = adv_correct / max(len(y), 1)
    return stats


def _adversarial_loss(recipe: Recipe, *, bounds: Bounds, seed: int) -> AdversarialLoss | CertifiedLoss | None:
    if recipe.adv == "none":
        return None
    if recipe.adv in CERTIFIED_MODES:
        return CertifiedLoss(
            mode=recipe.adv,
            eps=recipe.adv_eps,
            norm=recipe.adv_norm,
            ramp_epochs=recipe.adv_ramp_epochs,
            kappa_end=recipe.adv_kappa_end,
            bounds=bounds,
        )
    return AdversarialLoss(
        mode=recipe.adv,
        eps=recipe.adv_eps,
        norm=recipe.adv_norm,
        steps=recipe.adv_steps,
        rel_step_size=recipe.adv_rel_step_size,
        ramp_epochs=recipe.adv_ramp_epochs,
        beta=recipe.adv_beta,
        bounds=bounds,
        seed=seed,
    )


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
