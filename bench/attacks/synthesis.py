"""Shared pieces of the unbounded, targeted synthesis attacks (fooling images, targeted ascent)."""

from __future__ import annotations

import math

import torch

from bench.attacks.base import AttackError


def check_positive(name: str, field: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise AttackError(f"{name}: {field} must be a finite number > 0, got {value!r}")


def check_steps(name: str, steps: object) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise AttackError(f"{name}: steps must be an integer >= 1, got {steps!r}")


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
