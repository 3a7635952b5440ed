"""Basic iterative method (Kurakin et al., 2017): FGSM repeated with a small step, projected onto the eps ball."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from bench.attacks.base import TargetMode
from bench.attacks.iterative import IterativeGradientAttack
from bench.attacks.registry import ATTACKS
from bench.types import Norm


@ATTACKS.register("bim")
@dataclass(frozen=True, kw_only=True)
class BIM(IterativeGradientAttack):
    """Basic iterative method: ``steps`` FGSM steps from the clean input, clipped and projected after each.

    Shapes and ranges: ``x`` ``(N, C, H, W)`` in the data bounds (pixel
    units, normally [0, 1]); ``eps`` and ``step_size`` in pixel units of ``norm``.

    Args:
        norm: "linf" (default; Kurakin's BIM) or "l2".
        targeted: descend the cross-entropy of a target class instead of ascending the label's.
        target_mode: "random" (default), "least_likely" (Kurakin's iterative least-likely class) or "given".
        steps: iterations (default 10).
        step_size: absolute step (pixel units); default ``None`` = ``rel_step_size * eps``.
        rel_step_size: step as a fraction of eps (default 0.15: ten steps travel 1.5 eps).
        random_start: default ``False`` (BIM starts at the clean input; ``pgd`` is BIM with a random start).
        restarts: runs with fresh random starts (default 1; > 1 needs ``random_start``).
        early_stop: stop a sample once fooled or on target (default ``True``).

    Cost: at most ``steps`` gradients per sample and eps, fewer with early
    exit; sweep-aware (a sample fooled at a smaller eps is not attacked again).
    """

    name: ClassVar[str] = "bim"
    art_counterpart: ClassVar[str | None] = "BasicIterativeMethod"
    art_mapping: ClassVar[str] = (
        "linf: BasicIterativeMethod(eps=eps, eps_step=step_size or rel_step_size * eps, max_iter=steps, "
        "targeted=targeted); l2: ProjectedGradientDescent(norm=2, same, num_random_init=0). "
        "Identical updates when early_stop=False (ART has no early exit)."
    )

    norm: Norm = Norm.LINF
    targeted: bool = False
    target_mode: TargetMode = "random"
    steps: int = 10
    step_size: float | None = None
    rel_step_size: float = 0.15
    random_start: bool = False
    restarts: int = 1
    early_stop: bool = True
