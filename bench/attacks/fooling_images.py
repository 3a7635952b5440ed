"""Fooling images (Nguyen et al., 2015; the seed notebooks' "non-targeted attack"): noise ascended into a class."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from bench.attacks.abilities import Abilities
from bench.attacks.base import AttackContext, AttackError, Extras, SweepSteps, TargetedAttack
from bench.attacks.context import check_count
from bench.attacks.registry import ATTACKS
from bench.attacks.synthesis import check_confidence, check_positive, per_class_report, sign_ascent
from bench.types import AttackFamily, Bounds, Norm


@ATTACKS.register(
    "fooling_images",
    abilities=Abilities(
        family=AttackFamily.SYNTHESIS,
        no_art="ART has no logit ascent from noise (its attacks start from an input)",
        bounded=False,
    ),
)
@dataclass(frozen=True, kw_only=True)
class FoolingImages(TargetedAttack):
    """Start from seeded Gaussian noise and ascend the target class's logit until the model is confident.

    Each sample's target (the class to synthesise) comes from ``target_mode``;
    the input image only gives the shape: the result does not depend on its
    content. Every step is ``x <- clip(x + step_size * sign(d logit_target / dx))``;
    a sample stops once ``softmax(logits)[target] >= confidence`` (success) or
    after ``steps`` steps.

    Budget: none (norm ``none``): eps is ignored and the whole sweep costs one run.

    Args:
        targeted: always ``True`` (the synthesised class is the target).
        target_mode: "random" (default; a seeded class other than the label), "least_likely" or "given".
        confidence: probability of the target to reach (default 0.99).
        steps: maximum sign-gradient steps (default 200).
        step_size: step in pixel units (default 0.01).
        noise_mean: mean of the starting noise (default 0.5, mid-grey).
        noise_std: standard deviation of the starting noise (default 0.25), clipped to the bounds.

    Reports (``Sweep.extras``): ``success_rate``, ``mean_steps`` and, per
    target class, ``n``, ``success_rate`` and ``mean_steps``.

    Cost: at most ``steps`` gradients per sample for the whole sweep.
    """

    norm: Norm = Norm.NONE
    targeted: bool = True
    confidence: float = 0.99
    steps: int = 200
    step_size: float = 0.01
    noise_mean: float = 0.5
    noise_std: float = 0.25

    @classmethod
    def allowed_norms(cls) -> tuple[Norm, ...]:
        return (Norm.NONE,)

    def check_params(self) -> None:
        if not self.targeted:
            raise AttackError(f"{self.name}: targeted must be true (the class to synthesise is the target)")
        check_confidence(self.name, self.confidence)
        check_count(self.name, "steps", self.steps)
        check_positive(self.name, "step_size", self.step_size)
        check_positive(self.name, "noise_std", self.noise_std)
        if isinstance(self.noise_mean, bool) or not isinstance(self.noise_mean, int | float):
            raise AttackError(f"{self.name}: noise_mean must be a number, got {self.noise_mean!r}")

    def synthesise(
        self, model: nn.Module, shape: torch.Size, target: torch.Tensor, *, bounds: Bounds, ctx: AttackContext
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Images ``(N, C, H, W)`` for the classes ``target`` ``(N,)``; returns ``(x, success, steps_used)``."""
        device = target.device
        low, high = bounds.low, bounds.high
        noise = torch.randn(shape, generator=ctx.generator("fooling_noise")).to(device)
        x = (self.noise_mean + self.noise_std * noise).clamp(low, high)

        def logit(logits: torch.Tensor, xa: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
            return logits.gather(1, target[active].unsqueeze(1)).sum()

        return sign_ascent(
            model,
            x,
            target,
            logit,
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
        images, success, used = self.synthesise(model, x.shape, target, bounds=bounds, ctx=ctx)
        images = images.to(x.dtype)
        extras: Extras = {
            "success_rate": float(success.float().mean()),
            "mean_steps": float(used.float().mean()),
            "per_class": per_class_report(target, success, used),
        }
        for eps in epsilons:
            yield eps, images.clone()
        return extras
