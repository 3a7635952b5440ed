"""``square``: the Square Attack in Linf (Andriushchenko et al., ECCV 2020), a score-based black-box attack.

A native, batched PyTorch version of AutoAttack's Linf Square Attack: start from
vertical stripes of ``+-eps``; at each query change one random square window
(the same window for the batch, a fresh ``+-eps`` per sample and channel) and
keep the change where the margin loss ``z_y - max_{j != y} z_j`` went down; a
sample stops as soon as it is misclassified. The window's share of the image
follows AutoAttack's ``p`` schedule (``p_init`` halved at 10, 50, 200, 500, 1000,
2000, 4000, 6000, 8000 of 10,000 rescaled queries).

It exists because ART's ``SquareAttack`` loops over samples in Python at every
query (tens of milliseconds per query on a LeNet); this one costs one model call
per query for the samples still robust. L2 is left to ART (``art:SquareAttack``).
Gradients are never used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from bench.attacks.abilities import Abilities, ArtCounterpart
from bench.attacks.base import Attack, AttackContext, AttackError
from bench.attacks.context import check_count
from bench.attacks.registry import ATTACKS
from bench.types import AttackFamily, Bounds

_SCHEDULE = ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128), (8000, 256))


def p_selection(p_init: float, query: int, max_iter: int) -> float:
    """AutoAttack's schedule: the share of pixels one square changes at ``query`` of ``max_iter``."""
    it = int(query / max_iter * 10000)
    divisor = 512
    for limit, div in _SCHEDULE:
        if it <= limit:
            divisor = div
            break
    return p_init / divisor


def _margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``z_y - max_{j != y} z_j`` per sample (negative: misclassified)."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], -torch.inf).amax(1)
    return true - other


def _square_to_art(attack: Attack, eps: float) -> tuple[str, dict[str, Any]]:
    assert isinstance(attack, Square)
    return "SquareAttack", {"norm": "inf", "max_iter": attack.max_iter, "p_init": attack.p_init, "nb_restarts": 1}


def _always(attack: Attack) -> bool:
    return True


@ATTACKS.register(
    "square",
    abilities=Abilities(
        family=AttackFamily.NOISE,
        art=ArtCounterpart(
            to_art=_square_to_art,
            description=(
                "SquareAttack(norm=np.inf, eps=eps, max_iter=max_iter, p_init=p_init, nb_restarts=1); "
                "random windows differ (ours seeded): judged by the paired McNemar test."
            ),
            tolerance=0.0,
            stochastic=_always,
            in_default_matrix=False,
        ),
    ),
)
@dataclass(frozen=True, kw_only=True)
class Square(Attack):
    """Square Attack, Linf, untargeted; no gradients.

    Shapes and ranges: ``x`` ``(N, C, H, W)`` in the data bounds (pixel units,
    normally [0, 1]); ``eps`` in pixel units.

    Args:
        max_iter: queries per sample (default 1000; the ``reliable`` preset uses 5000, as standard AutoAttack).
        p_init: initial share of pixels one square changes (default 0.8).

    Cost: at most ``max_iter`` forward passes per sample and eps, fewer once fooled.
    """

    uses_gradients: ClassVar[bool] = False
    pooled: ClassVar[bool] = True

    max_iter: int = 1000
    p_init: float = 0.8

    def check_params(self) -> None:
        check_count("square", "max_iter", self.max_iter)
        if isinstance(self.p_init, bool) or not isinstance(self.p_init, int | float) or not 0 < self.p_init <= 1:
            raise AttackError(f"square: p_init must be a number in (0, 1], got {self.p_init!r}")

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
        n, c, h, w = x.shape
        if n == 0 or eps == 0:
            return x
        gen = ctx.generator("square", eps)
        low = (x - eps).clamp(bounds.low, bounds.high)
        high = (x + eps).clamp(bounds.low, bounds.high)

        def signs(*shape: int) -> torch.Tensor:
            return (torch.randint(0, 2, shape, generator=gen) * 2 - 1).to(x.device, x.dtype) * eps

        best = torch.minimum(torch.maximum(x + signs(n, c, 1, w), low), high)
        margin = _margin(ctx.logits(model, best), y)
        for query in range(1, self.max_iter):
            todo = (margin > 0).nonzero().squeeze(1)
            if todo.numel() == 0:
                break
            side = min(max(round(math.sqrt(self.p_selection(query) * h * w)), 1), min(h, w) - 1)
            top = int(torch.randint(0, h - side + 1, (1,), generator=gen))
            left = int(torch.randint(0, w - side + 1, (1,), generator=gen))
            values = signs(todo.numel(), c, 1, 1)
            cand = best[todo].clone()
            window = (slice(None), slice(None), slice(top, top + side), slice(left, left + side))
            cand[window] = (x[todo] + values)[window]
            cand = torch.minimum(torch.maximum(cand, low[todo]), high[todo])
            new = _margin(ctx.logits(model, cand), y[todo])
            better = new < margin[todo]
            improved = todo[better]
            best[improved] = cand[better]
            margin[improved] = new[better]
        return best

    def p_selection(self, query: int) -> float:
        return p_selection(float(self.p_init), query, self.max_iter)


__all__: Sequence[str] = ("Square", "p_selection")
