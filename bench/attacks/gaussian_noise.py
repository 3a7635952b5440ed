"""Gaussian noise truncated to the Linf ball: a baseline at the same budget as the gradient attacks."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from bench.attacks.base import Attack, AttackContext, AttackError
from bench.attacks.registry import ATTACKS
from bench.attacks.uniform_noise import check_draws
from bench.attacks.worst_case import worst_of
from bench.types import Norm


@ATTACKS.register("gaussian_noise")
@dataclass(frozen=True, kw_only=True)
class GaussianNoise(Attack):
    """``x + clamp(N(0, (std_ratio * eps)^2), -eps, eps)`` per pixel, clipped to the bounds; worst of ``draws``.

    Budget: eps is the Linf radius in pixel units; the Gaussian's standard
    deviation is ``std_ratio * eps`` and its tails are clamped into the ball,
    so the perturbation is comparable with a Linf attack at the same eps.

    Args:
        std_ratio: standard deviation as a fraction of eps (default 0.5).
        draws: noise samples per input and eps (default 10); the first misclassified
            draw is kept, else the draw with the highest label loss.

    Cost: no gradients; ``draws`` forward passes per sample and eps.
    """

    name: ClassVar[str] = "gaussian_noise"
    art_counterpart: ClassVar[str | None] = None
    art_mapping: ClassVar[str] = "none: ART has no noise baseline attack"
    uses_gradients: ClassVar[bool] = False

    norm: Norm = Norm.LINF
    std_ratio: float = 0.5
    draws: int = 10

    def check_params(self) -> None:
        check_draws(self.name, self.draws)
        ok = isinstance(self.std_ratio, int | float) and not isinstance(self.std_ratio, bool)
        if not ok or not math.isfinite(self.std_ratio) or self.std_ratio <= 0:
            raise AttackError(f"{self.name}: std_ratio must be a finite number > 0, got {self.std_ratio!r}")

    def _run(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        eps: float,
        *,
        target: torch.Tensor | None,
        ctx: AttackContext,
    ) -> torch.Tensor:
        low, high = ctx.bounds.low, ctx.bounds.high

        def candidates() -> Iterator[torch.Tensor]:
            for d in range(self.draws):
                noise = (ctx.randn_like(x, "gaussian", float(eps), d) * (self.std_ratio * eps)).clamp(-eps, eps)
                yield (x + noise).clamp(low, high)

        return worst_of(model, x, y, candidates(), ctx=ctx)
