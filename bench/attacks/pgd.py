"""Projected gradient descent (Madry et al., 2018): BIM from a random point of the eps ball, with restarts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from bench.attacks.base import TargetMode
from bench.attacks.iterative import IterativeGradientAttack
from bench.attacks.registry import ATTACKS
from bench.types import Norm


@ATTACKS.register("pgd")
@dataclass(frozen=True, kw_only=True)
class PGD(IterativeGradientAttack):
    """Projected gradient descent in linf or l2, from a seeded random start, best of ``restarts`` runs.

    Shapes and ranges: ``x`` ``(N, C, H, W)`` in the data bounds (pixel
    units, normally [0, 1]); ``eps`` and ``step_size`` in pixel units of ``norm``.

    Args:
        norm: "linf" (default) or "l2".
        targeted: descend the cross-entropy of a target class instead of ascending the label's.
        target_mode: "random" (default), "least_likely" or "given".
        steps: iterations per restart (default 40).
        step_size: absolute step (pixel units); default ``None`` = ``rel_step_size * eps``.
        rel_step_size: step as a fraction of eps (default 0.0625 = Madry et al.'s ``2.5 * eps / steps`` for 40 steps).
        random_start: start at a seeded uniform point of the eps ball (default ``True``).
        restarts: runs with fresh random starts (default 1); later runs re-attack only still-robust samples.
        early_stop: stop a sample once fooled or on target (default ``True``).

    Cost: at most ``steps * restarts`` gradients per sample and eps, fewer with
    early exit; sweep-aware (a sample fooled at a smaller eps is not attacked again).
    """

    name: ClassVar[str] = "pgd"
    art_counterpart: ClassVar[str | None] = "ProjectedGradientDescent"
    art_mapping: ClassVar[str] = (
        "ProjectedGradientDescent(norm=np.inf|2, eps=eps, eps_step=step_size or rel_step_size * eps, "
        "max_iter=steps, targeted=targeted, num_random_init=restarts if random_start else 0). "
        "Identical updates when random_start=False and early_stop=False (random starts draw from our seeded "
        "generator, ART's from NumPy's global one; ART has no early exit)."
    )

    norm: Norm = Norm.LINF
    targeted: bool = False
    target_mode: TargetMode = "random"
    steps: int = 40
    step_size: float | None = None
    rel_step_size: float = 0.0625
    random_start: bool = True
    restarts: int = 1
    early_stop: bool = True
