"""Fast gradient sign method (Goodfellow et al., 2015) and the L2 fast gradient method."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from bench.attacks.abilities import Abilities, ArtCounterpart
from bench.attacks.base import Attack, AttackContext, Ray, TargetedAttack
from bench.attacks.registry import ATTACKS
from bench.types import AttackFamily, Bounds, Norm

FGSM_TOLERANCE = 1e-6
"""Max ``|native - ART|`` of an FGSM pair (pixels): one step, the same single rounding as ART."""


def fgm_direction(grad: torch.Tensor, norm: Norm) -> torch.Tensor:
    """Unit step direction of the fast gradient method.

    ``linf``: ``sign(grad)``; ``l2``: ``grad / ||grad||_2`` per sample (zero
    where the gradient is zero). Shape as ``grad``.
    """
    if norm is Norm.LINF:
        return grad.sign()
    flat = grad.reshape(grad.shape[0], -1)
    norms = flat.norm(p=2, dim=1).view(-1, *([1] * (grad.ndim - 1)))
    return torch.where(norms > 0, grad / norms.clamp_min(1e-30), torch.zeros_like(grad))


def fgsm_to_art(attack: Attack, eps: float) -> tuple[str, dict[str, Any]]:
    """ART's ``FastGradientMethod`` with our norm and targeting, no random init, not minimal."""
    return "FastGradientMethod", {
        "norm": attack.norm.value,
        "targeted": attack.targeted,
        "num_random_init": 0,
        "minimal": False,
    }


FGSM_ABILITIES = Abilities(
    family=AttackFamily.ONE_STEP,
    art=ArtCounterpart(
        to_art=fgsm_to_art,
        description="FastGradientMethod(norm=np.inf|2, eps=eps, targeted=targeted, minimal=False)",
        tolerance=FGSM_TOLERANCE,
    ),
    minimal_eps="ray",
    reproducible=True,  # docs/models.md "Reference weights": identical across runs and 1/2 threads on equal numerics
)


@ATTACKS.register("fgsm", abilities=FGSM_ABILITIES)
@dataclass(frozen=True, kw_only=True)
class FGSM(TargetedAttack):
    """Fast gradient sign method (linf) / fast gradient method (l2): one gradient step of size eps.

    ``x_adv = clip(x + eps * d)``, with ``d = sign(grad)`` (linf) or the
    gradient scaled to unit L2 norm per sample (l2), where ``grad`` is the
    gradient of the cross-entropy at the true label (untargeted, ascent) or at
    the target class (targeted, descent).

    Args:
        norm: "linf" (default) or "l2".
        targeted: drive samples to a target class instead of away from the label.
        target_mode: for targeted mode without explicit targets: "random"
            (default; a seeded class other than the true one), "least_likely"
            (the lowest clean logit) or "given" (targets must be passed).

    Cost: one gradient per sample, whatever the number of epsilons (a ray
    attack); a sweep over E epsilons adds E forward passes (done by the caller to score them).
    """

    ray: ClassVar[bool] = True

    @classmethod
    def allowed_norms(cls) -> tuple[Norm, ...]:
        return (Norm.LINF, Norm.L2)

    def direction(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, target: torch.Tensor | None, ctx: AttackContext
    ) -> torch.Tensor:
        """The signed unit step ``(N, C, H, W)``: ascent on the label loss, or descent on the target's."""
        labels = target if self.targeted and target is not None else y
        grad, _ = ctx.loss_gradient(model, x, labels)
        d = fgm_direction(grad, self.norm)
        return -d if self.targeted else d

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
    ) -> Ray:
        """One direction for every eps: the base builds ``clip(x + eps * d)``."""
        return Ray(self.direction(model, x, y, target=target, ctx=ctx))
