"""Occlusion: a square patch slid over the image (the seed notebooks' occlusion maps, as an attack)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from bench.attacks.abilities import Abilities
from bench.attacks.base import Attack, AttackContext, AttackError
from bench.attacks.context import check_count
from bench.attacks.registry import ATTACKS
from bench.attacks.worst_case import worst_of
from bench.types import AttackFamily, Bounds, Norm


def patch_positions(size: int, side: int, stride: int) -> list[int]:
    """Top (or left) coordinates of a ``side`` patch slid with ``stride`` over ``size`` pixels, last edge included."""
    positions = list(range(0, size - side + 1, stride))
    if positions[-1] != size - side:
        positions.append(size - side)
    return positions


@ATTACKS.register("occlusion", abilities=Abilities(family=AttackFamily.OCCLUSION, no_art="ART has no occlusion attack"))
@dataclass(frozen=True, kw_only=True)
class Occlusion(Attack):
    """Cover a ``side x side`` square with ``value`` at every position of a sliding window.

    A sample is robust only if it is classified correctly at every position:
    the attack returns, per sample, the first misclassified position, else the
    position with the highest label loss.

    Budget (norm ``patch``): eps is the patch side in pixels (a whole number,
    at most the image's height and width); eps = 0 leaves the input alone.

    Args:
        value: pixel value of the patch (default 0.0, black; clipped to the data bounds).
        stride: step of the sliding window in pixels (default 2); the last row and
            column positions are always included so the patch reaches every edge.

    Cost: no gradients; at most one forward pass per sample and position (a
    sample is not scored again once a position misclassifies it),
    ``ceil((H - eps) / stride + 1) * ceil((W - eps) / stride + 1)`` positions.
    """

    uses_gradients: ClassVar[bool] = False

    norm: Norm = Norm.PATCH
    value: float = 0.0
    stride: int = 2

    @classmethod
    def allowed_norms(cls) -> tuple[Norm, ...]:
        return (Norm.PATCH,)

    def check_params(self) -> None:
        check_count(self.name, "stride", self.stride, unit="pixels")
        if isinstance(self.value, bool) or not isinstance(self.value, int | float):
            raise AttackError(f"{self.name}: value must be a number (a pixel value), got {self.value!r}")

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
        side = round(eps)
        h, w = x.shape[-2:]
        if abs(eps - side) > 1e-6:
            raise AttackError(f"{self.name}: eps is the patch side in pixels and must be a whole number, got {eps}")
        if side > min(h, w):
            raise AttackError(f"{self.name}: patch side {side} is larger than the {h}x{w} image")
        if side == 0:
            return x.clone()
        fill = min(max(float(self.value), bounds.low), bounds.high)

        def candidates() -> Iterator[torch.Tensor]:
            for top in patch_positions(h, side, self.stride):
                for left in patch_positions(w, side, self.stride):
                    cand = x.clone()
                    cand[..., top : top + side, left : left + side] = fill
                    yield cand

        return worst_of(model, x, y, candidates(), ctx=ctx)
