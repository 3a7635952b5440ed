"""Salt-and-pepper noise: a fraction of the pixels set to the lowest or highest value."""

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


@ATTACKS.register("salt_pepper")
@dataclass(frozen=True, kw_only=True)
class SaltPepper(Attack):
    """Set ``floor(eps * H * W)`` seeded pixel positions (all channels) to the upper or lower bound.

    Budget (norm ``l0``): eps is the fraction of pixel positions that may
    change, in [0, 1]; eps = 0.05 on 28x28 MNIST flips 39 pixels.

    Args:
        salt_ratio: probability that a chosen pixel becomes the upper bound (salt)
            rather than the lower bound (pepper) (default 0.5).
        draws: noise samples per input and eps (default 10); the first misclassified
            draw is kept, else the draw with the highest label loss.

    Cost: no gradients; ``draws`` forward passes per sample and eps.
    """

    name: ClassVar[str] = "salt_pepper"
    art_counterpart: ClassVar[str | None] = None
    art_mapping: ClassVar[str] = "none: ART has no noise baseline attack"
    uses_gradients: ClassVar[bool] = False

    norm: Norm = Norm.L0
    salt_ratio: float = 0.5
    draws: int = 10

    @classmethod
    def allowed_norms(cls) -> tuple[Norm, ...]:
        return (Norm.L0,)

    def check_params(self) -> None:
        check_draws(self.name, self.draws)
        ok = isinstance(self.salt_ratio, int | float) and not isinstance(self.salt_ratio, bool)
        if not ok or not 0 <= self.salt_ratio <= 1:
            raise AttackError(f"{self.name}: salt_ratio must be a number in [0, 1], got {self.salt_ratio!r}")

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
        if eps > 1:
            raise AttackError(f"{self.name}: eps is a fraction of pixels and must be in [0, 1], got {eps}")
        n, _, h, w = x.shape
        # The same count as the base class's l0 projection keeps, so the projection never drops a pixel.
        k = math.floor(eps * h * w + 1e-9)
        if k == 0:
            return x.clone()
        low, high = ctx.bounds.low, ctx.bounds.high

        def candidates() -> Iterator[torch.Tensor]:
            for d in range(self.draws):
                gen = ctx.generator("salt_pepper", float(eps), d)
                chosen = torch.rand((n, h * w), generator=gen).topk(k, dim=1).indices
                salt = torch.rand((n, k), generator=gen) < self.salt_ratio
                values = torch.where(salt, high, low).to(x.dtype)
                flat = x.reshape(n, x.shape[1], h * w).clone()
                flat.scatter_(
                    2,
                    chosen.to(x.device).unsqueeze(1).expand(-1, x.shape[1], -1),
                    values.to(x.device).unsqueeze(1).expand(-1, x.shape[1], -1),
                )
                yield flat.reshape(x.shape)

        return worst_of(model, x, y, candidates(), ctx=ctx)
