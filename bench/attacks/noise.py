"""Noise baselines at the same budget as the gradient attacks: uniform, Gaussian, salt-and-pepper.

One family: each draws ``draws`` seeded candidates per input and eps and keeps,
per sample, the first misclassified one, else the one with the highest label
loss (:func:`~bench.attacks.worst_case.worst_of`). A gradient attack weaker than
these at the same budget is a red flag the report raises.

Cost: no gradients; at most ``draws`` forward passes per sample and eps (none after its first misclassified draw).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn

from bench.attacks.abilities import Abilities
from bench.attacks.base import Attack, AttackContext, AttackError
from bench.attacks.context import check_count
from bench.attacks.registry import ATTACKS
from bench.attacks.worst_case import worst_of
from bench.types import AttackFamily, Bounds, Norm

NOISE = Abilities(family=AttackFamily.NOISE, no_art="ART has no noise baseline attack")


@dataclass(frozen=True, kw_only=True)
class NoiseAttack(Attack):
    """The shared algorithm: worst of ``draws`` candidates from :meth:`draw`.

    Each subclass declares its own fields, ``draws`` last (the field order is the
    attack's identity in ``repr`` and in results, so it is not declared here).
    """

    uses_gradients: ClassVar[bool] = False

    if TYPE_CHECKING:  # a field of every subclass, declared after its own parameters
        draws: int

    def check_params(self) -> None:
        check_count(self.name, "draws", self.draws)

    def draw(self, x: torch.Tensor, eps: float, index: int, *, bounds: Bounds, ctx: AttackContext) -> torch.Tensor:
        """Candidate ``index`` (0 .. draws - 1) for ``x`` ``(N, C, H, W)`` at ``eps``, in ``bounds``."""
        raise NotImplementedError

    def run(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        eps: float,
        *,
        target: torch.Tensor | None,
        bounds: Bounds,
        ctx: AttackContext,
    ) -> torch.Tensor:
        candidates = (self.draw(x, eps, d, bounds=bounds, ctx=ctx) for d in range(self.draws))
        return worst_of(model, x, y, candidates, ctx=ctx)


@ATTACKS.register("uniform_noise", abilities=NOISE)
@dataclass(frozen=True, kw_only=True)
class UniformNoise(NoiseAttack):
    """``x + U(-eps, eps)`` per pixel, clipped to the bounds; worst case over ``draws`` seeded draws.

    Budget: eps is the Linf radius in pixel units (each pixel moves by at most eps).

    Args:
        draws: noise samples per input and eps (default 10); the first misclassified
            draw is kept, else the draw with the highest label loss.

    Cost: no gradients; at most ``draws`` forward passes per sample and eps.
    """

    norm: Norm = Norm.LINF
    draws: int = 10

    def draw(self, x: torch.Tensor, eps: float, index: int, *, bounds: Bounds, ctx: AttackContext) -> torch.Tensor:
        noise = ctx.rand_like(x, "uniform", float(eps), index) * 2 - 1
        return (x + eps * noise).clamp(bounds.low, bounds.high)


@ATTACKS.register("gaussian_noise", abilities=NOISE)
@dataclass(frozen=True, kw_only=True)
class GaussianNoise(NoiseAttack):
    """``x + clamp(N(0, (std_ratio * eps)^2), -eps, eps)`` per pixel, clipped to the bounds; worst of ``draws``.

    Budget: eps is the Linf radius in pixel units; the Gaussian's standard
    deviation is ``std_ratio * eps`` and its tails are clamped into the ball,
    so the perturbation is comparable with a Linf attack at the same eps.

    Args:
        std_ratio: standard deviation as a fraction of eps (default 0.5).
        draws: noise samples per input and eps (default 10); the first misclassified
            draw is kept, else the draw with the highest label loss.

    Cost: no gradients; at most ``draws`` forward passes per sample and eps.
    """

    norm: Norm = Norm.LINF
    std_ratio: float = 0.5
    draws: int = 10

    def check_params(self) -> None:
        check_count(self.name, "draws", self.draws)
        ok = isinstance(self.std_ratio, int | float) and not isinstance(self.std_ratio, bool)
        if not ok or not math.isfinite(self.std_ratio) or self.std_ratio <= 0:
            raise AttackError(f"{self.name}: std_ratio must be a finite number > 0, got {self.std_ratio!r}")

    def draw(self, x: torch.Tensor, eps: float, index: int, *, bounds: Bounds, ctx: AttackContext) -> torch.Tensor:
        noise = (ctx.randn_like(x, "gaussian", float(eps), index) * (self.std_ratio * eps)).clamp(-eps, eps)
        return (x + noise).clamp(bounds.low, bounds.high)


@ATTACKS.register("salt_pepper", abilities=NOISE)
@dataclass(frozen=True, kw_only=True)
class SaltPepper(NoiseAttack):
    """Set ``floor(eps * H * W)`` seeded pixel positions (all channels) to the upper or lower bound.

    Budget (norm ``l0``): eps is the fraction of pixel positions that may
    change, in [0, 1]; eps = 0.05 on 28x28 MNIST flips 39 pixels.

    Args:
        salt_ratio: probability that a chosen pixel becomes the upper bound (salt)
            rather than the lower bound (pepper) (default 0.5).
        draws: noise samples per input and eps (default 10); the first misclassified
            draw is kept, else the draw with the highest label loss.

    Cost: no gradients; at most ``draws`` forward passes per sample and eps.
    """

    norm: Norm = Norm.L0
    salt_ratio: float = 0.5
    draws: int = 10

    @classmethod
    def allowed_norms(cls) -> tuple[Norm, ...]:
        return (Norm.L0,)

    def check_params(self) -> None:
        check_count(self.name, "draws", self.draws)
        ok = isinstance(self.salt_ratio, int | float) and not isinstance(self.salt_ratio, bool)
        if not ok or not 0 <= self.salt_ratio <= 1:
            raise AttackError(f"{self.name}: salt_ratio must be a number in [0, 1], got {self.salt_ratio!r}")

    @staticmethod
    def pixels(eps: float, x: torch.Tensor) -> int:
        """Pixel positions changed at ``eps``: the same count the base class's l0 projection keeps."""
        h, w = x.shape[-2:]
        return math.floor(eps * h * w + 1e-9)

    def run(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        eps: float,
        *,
        target: torch.Tensor | None,
        bounds: Bounds,
        ctx: AttackContext,
    ) -> torch.Tensor:
        if eps > 1:
            raise AttackError(f"{self.name}: eps is a fraction of pixels and must be in [0, 1], got {eps}")
        if self.pixels(eps, x) == 0:
            return x.clone()
        return super().run(model, x, y, eps, target=target, bounds=bounds, ctx=ctx)

    def draw(self, x: torch.Tensor, eps: float, index: int, *, bounds: Bounds, ctx: AttackContext) -> torch.Tensor:
        n, c, h, w = x.shape
        k = self.pixels(eps, x)
        gen = ctx.generator("salt_pepper", float(eps), index)
        chosen = torch.rand((n, h * w), generator=gen).topk(k, dim=1).indices
        salt = torch.rand((n, k), generator=gen) < self.salt_ratio
        values = torch.where(salt, bounds.high, bounds.low).to(x.dtype)
        flat = x.reshape(n, c, h * w).clone()
        flat.scatter_(
            2,
            chosen.to(x.device).unsqueeze(1).expand(-1, c, -1),
            values.to(x.device).unsqueeze(1).expand(-1, c, -1),
        )
        return flat.reshape(x.shape)
