"""Shared pieces of the unbounded, targeted synthesis attacks (fooling images, targeted ascent)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from bench.attacks.base import AttackContext, AttackError
from bench.types import Bounds


def check_positive(name: str, field: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise AttackError(f"{name}: {field} must be a finite number > 0, got {value!r}")


def check_confidence(name: str, confidence: object) -> None:
    ok = isinstance(confidence, int | float) and not isinstance(confidence, bool)
    if not ok or not 0 < confidence < 1:
        raise AttackError(f"{name}: confidence must be a probability in (0, 1), got {confidence!r}")


def per_class_report(
    target: torch.Tensor, success: torch.Tensor, steps_used: torch.Tensor
) -> dict[str, dict[str, float | int]]:
    """``{class: {n, success_rate, mean_steps}}`` over the samples aimed at each class (JSON-able)."""
    report: dict[str, dict[str, float | int]] = {}
    for cls in sorted(int(c) for c in target.unique()):
        sel = target == cls
        report[str(cls)] = {
            "n": int(sel.sum()),
            "success_rate": float(success[sel].float().mean()),
            "mean_steps": float(steps_used[sel].float().mean()),
        }
    return report


Objective = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``(logits (n, K), x (n, C, H, W), active rows (n,)) -> scalar`` to ascend."""


def sign_ascent(
    model: nn.Module,
    start: torch.Tensor,
    target: torch.Tensor,
    objective: Objective,
    *,
    steps: int,
    step_size: float,
    confidence: float,
    bounds: Bounds,
    ctx: AttackContext,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sign-gradient ascent of ``objective`` until ``p(target) >= confidence`` or ``steps`` run out.

    Shared by fooling images (the target's logit from noise) and targeted ascent
    (the target's logit minus an MSE pull). Each sample stops as soon as it is
    confident; steps stay in ``bounds``. Returns ``(x, success, steps_used)``
    with ``x`` shaped like ``start``.
    """
    low, high = bounds.low, bounds.high
    x = start.clone()
    n = x.shape[0]
    active = torch.arange(n, device=x.device)
    success = torch.zeros(n, dtype=torch.bool, device=x.device)
    used = torch.zeros(n, dtype=torch.long, device=x.device)
    for _ in range(steps):
        xa = x[active].detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model(xa)
            value = objective(logits, xa, active)
        ctx.forward_evals += int(active.numel())
        grad = ctx.objective_gradient(xa, value)
        done = logits.detach().softmax(1).gather(1, target[active].unsqueeze(1)).squeeze(1) >= confidence
        success[active[done]] = True
        active, grad = active[~done], grad[~done]
        if active.numel() == 0:
            break
        x[active] = (x[active] + step_size * grad.sign()).clamp(low, high)
        used[active] += 1
    if active.numel():
        probs = ctx.logits(model, x[active]).softmax(1)
        success[active] = probs.gather(1, target[active].unsqueeze(1)).squeeze(1) >= confidence
    return x, success, used
