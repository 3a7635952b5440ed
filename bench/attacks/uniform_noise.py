"""Uniform noise in the Linf ball: a baseline any gradient attack at the same budget should beat."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from bench.attacks.base import Attack, AttackContext, AttackError
from bench.attacks.registry import ATTACKS
from bench.attacks.worst_case import worst_of
from bench.types import Norm


@ATTACKS.register("uniform_noise")
@dataclass(frozen=True, kw_only=True)
class UniformNoise(Attack):
    """``x + U(-eps, eps)`` per pixel, clipped to the bounds; worst case over ``draws`` seeded draws.

    Budget: eps is the Linf radius in pixel units (each pixel moves by at most eps).

    Args:
        draws: noise samples per input and eps (default 10); the first misclassified
            draw is kept, else the draw with the highest label loss.

    Cost: no gradients; ``draws`` forward passes per sample and eps.
    """

    name: ClassVar[str] = "uniform_noise"
    art_counterpart: ClassVar[str | None] = None
    art_mapping: ClassVar[str] = "none: ART has no noise baseline attack"
    uses_gradients: ClassVar[bool] = False

    norm: Norm = Norm.LINF
    draws: int = 10

    def check_params(self) -> None:
        check_draws(self.name, self.draws)

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
                noise = ctx.rand_like(x, "uniform", float(eps), d) * 2 - 1
                yield (x + eps * noise).clamp(low, high)

        return worst_of(model, x, y, candidates(), ctx=ctx)


def check_draws(name: str, draws: object) -> None:
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise AttackError(f"{name}: draws must be an integer >= 1, got {draws!r}")
