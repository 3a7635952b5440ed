"""Target classes of targeted attacks: given, least likely, or a seeded random other class."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from bench.attacks.context import AttackContext, AttackError

TargetMode = Literal["random", "least_likely", "given"]
TARGET_MODES: tuple[str, ...] = ("random", "least_likely", "given")


def resolve_targets(
    logits: torch.Tensor,
    y: torch.Tensor,
    mode: TargetMode,
    *,
    given: torch.Tensor | None,
    ctx: AttackContext,
) -> torch.Tensor:
    """Target classes ``(N,)`` for a targeted attack.

    ``logits`` ``(N, K)``; ``given``: the caller's targets (validated against the
    number of classes); ``least_likely``: the class with the lowest clean logit;
    ``random``: a seeded uniform class other than the true one (generator key ``"target"``).
    """
    num_classes = int(logits.shape[1])
    if given is not None:
        target = given.to(device=y.device, dtype=torch.long)
        if target.shape != y.shape:
            raise AttackError(f"target shape {tuple(target.shape)} does not match labels {tuple(y.shape)}")
        if bool(((target < 0) | (target >= num_classes)).any()):
            bad = int(target[(target < 0) | (target >= num_classes)][0])
            raise AttackError(f"target class {bad} does not exist: the model has classes 0..{num_classes - 1}")
        return target
    if mode == "given":
        raise AttackError("target mode 'given' needs explicit target classes (none were passed)")
    if mode == "least_likely":
        return logits.argmin(dim=1)
    if mode == "random":
        offset = ctx.randint(1, num_classes, tuple(y.shape), y.device, "target")
        return (y + offset) % num_classes
    raise AttackError(f"unknown target mode {mode!r} (allowed: random, least_likely, given)")


def choose_targets(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    mode: TargetMode,
    *,
    given: torch.Tensor | None,
    ctx: AttackContext,
) -> torch.Tensor:
    """Targets ``(N,)`` for ``x`` ``(N, C, H, W)``: full clean logits only when ``least_likely`` needs them.

    Otherwise one sample's logits tell the number of classes (one forward pass).
    """
    if given is None and mode == "least_likely":
        logits = ctx.logits(model, x)
    else:
        logits = ctx.logits(model, x[:1]).expand(x.shape[0], -1)
    return resolve_targets(logits, y, mode, given=given, ctx=ctx)
