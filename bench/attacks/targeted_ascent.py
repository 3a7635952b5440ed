"""Targeted ascent with an image prior: push an image into a target class while an MSE term keeps it close."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from bench.attacks.abilities import Abilities
from bench.attacks.base import AttackContext, AttackError, Extras, SweepSteps, TargetedAttack, perturbation_norms
from bench.attacks.context import check_count
from bench.attacks.registry import ATTACKS
from bench.attacks.synthesis import check_confidence, check_positive, per_class_report, sign_ascent
from bench.types import AttackFamily, Bounds, Norm


@ATTACKS.register(
    "targeted_ascent",
    abilities=Abilities(
        family=AttackFamily.SYNTHESIS, no_art="ART has no logit ascent with an MSE prior", bounded=False
    ),
)
@dataclass(frozen=True, kw_only=True)
class TargetedAscent(TargetedAttack):
    """Ascend ``logit_target(x) - beta * MSE(x, x_original)`` with sign steps until ``p(target) >= confidence``.

    ``MSE`` is the mean squared pixel difference per image (pixel units,
    normally [0, 1]). Every step is ``x <- clip(x + step_size * sign(grad))``;
    a sample stops once the model gives its target probability ``>= confidence``
    (success) or after ``steps`` steps.

    Budget: none (norm ``none``): eps is ignored; the prior, not a ball, keeps
    the image close. The final distances are reported instead.

    Args:
        targeted: always ``True``.
        target_mode: "random" (default; a seeded class other than the label), "least_likely" or "given".
        confidence: probability of the target to reach (default 0.99).
        beta: weight of the MSE pull toward the original (default 100.0; 0 disables it).
        steps: maximum sign-gradient steps (default 200).
        step_size: step in pixel units (default 0.005).

    Reports (``Sweep.extras``): ``success_rate``, ``mean_steps``, the mean and
    median final ``l2``, ``linf`` and ``mse`` distances to the original, and per
    target class ``n``, ``success_rate``, ``mean_steps``.

    Cost: at most ``steps`` gradients per sample for the whole sweep.
    """

    norm: Norm = Norm.NONE
    targeted: bool = True
    confidence: float = 0.99
    beta: float = 100.0
    steps: int = 200
    step_size: float = 0.005

    @classmethod
    def allowed_norms(cls) -> tuple[Norm, ...]:
        return (Norm.NONE,)

    def check_params(self) -> None:
        if not self.targeted:
            raise AttackError(f"{self.name}: targeted must be true (the attack ascends a target class)")
        check_confidence(self.name, self.confidence)
        check_count(self.name, "steps", self.steps)
        check_positive(self.name, "step_size", self.step_size)
        if isinstance(self.beta, bool) or not isinstance(self.beta, int | float) or not self.beta >= 0:
            raise AttackError(f"{self.name}: beta must be a number >= 0, got {self.beta!r}")

    def ascend(
        self, model: nn.Module, x0: torch.Tensor, target: torch.Tensor, *, bounds: Bounds, ctx: AttackContext
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Ascended images like ``x0`` ``(N, C, H, W)``; returns ``(x, success, steps_used)``."""

        def pulled_logit(logits: torch.Tensor, xa: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
            picked = logits.gather(1, target[active].unsqueeze(1)).squeeze(1)
            mse = (xa - x0[active]).pow(2).reshape(len(active), -1).mean(dim=1)
            return (picked - self.beta * mse).sum()

        return sign_ascent(
            model,
            x0,
            target,
            pulled_logit,
            steps=self.steps,
            step_size=self.step_size,
            confidence=self.confidence,
            bounds=bounds,
            ctx=ctx,
        )

    def run_sweep(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        epsilons: Sequence[float],
        *,
        target: torch.Tensor | None,
        bounds: Bounds,
        ctx: AttackContext,
    ) -> SweepSteps:
        assert target is not None  # targeted is enforced in check_params
        x_adv, success, used = self.ascend(model, x, target, bounds=bounds, ctx=ctx)
        norms = perturbation_norms(x_adv, x)
        mse = (x_adv - x).pow(2).reshape(x.shape[0], -1).mean(dim=1)
        extras: Extras = {"success_rate": float(success.float().mean()), "mean_steps": float(used.float().mean())}
        for key, values in (("l2", norms["l2"]), ("linf", norms["linf"]), ("mse", mse)):
            extras[f"mean_{key}"] = float(values.mean())
            extras[f"median_{key}"] = float(values.median())
        extras["per_class"] = per_class_report(target, success, used)
        for eps in epsilons:
            yield eps, x_adv.clone()
        return extras
