"""Learned additive noise: one perturbation learned on a source part of the batch, then tried on the rest."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from bench.attacks.abilities import Abilities
from bench.attacks.base import AttackContext, Extras, SweepSteps, TargetedAttack
from bench.attacks.context import check_count
from bench.attacks.registry import ATTACKS
from bench.attacks.synthesis import check_positive
from bench.types import AttackFamily, Bounds, eps_label

TRANSFER = Abilities(
    family=AttackFamily.TRANSFER,
    no_art=(
        "only loosely UniversalPerturbation(attacker='fgsm', eps=eps, norm=np.inf): ART builds delta from "
        "per-sample DeepFool/FGSM steps over the whole set, we take sign steps on the summed source loss, "
        "so results differ"
    ),
)


@ATTACKS.register("adversarial_noise", abilities=TRANSFER)
@dataclass(frozen=True, kw_only=True)
class AdversarialNoise(TargetedAttack):
    """One perturbation ``delta`` (``||delta||_inf <= eps``) shared by every sample of the batch.

    ``delta`` starts at 0 and takes ``steps`` sign-gradient steps of
    ``rel_step_size * eps`` on the summed cross-entropy of the first
    ``source_size`` samples (ascent on their labels, or descent toward their
    targets), projected onto the ball after each. Every sample gets
    ``clip(x + delta)``; the fooling rate on the held-out rest of the batch,
    which ``delta`` never saw, measures how it transfers.

    Budget: eps is the Linf radius of ``delta`` in pixel units.

    Args:
        targeted: drive samples to their targets (for one class for all, pass given targets of that class).
        target_mode: "random" (default), "least_likely" or "given".
        source_size: samples learned on (default 64), at most half the batch so that
            some are held out (and at least 1).
        steps: sign-gradient steps (default 40).
        rel_step_size: step as a fraction of eps (default 0.1).

    Reports (``Sweep.extras["fooling"]``, per eps): ``source_fooling_rate`` and
    ``transfer_fooling_rate`` (among clean-correct samples; targeted: reached
    target), and ``source_size``/``heldout_size``.

    Cost: ``steps * source_size`` gradients per batch and eps.
    """

    source_size: int = 64
    steps: int = 40
    rel_step_size: float = 0.1

    def check_params(self) -> None:
        check_count(self.name, "source_size", self.source_size)
        check_count(self.name, "steps", self.steps)
        check_positive(self.name, "rel_step_size", self.rel_step_size)

    def _fooled(self, pred: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        return pred == target if self.targeted and target is not None else pred != y

    def learn(
        self,
        model: nn.Module,
        x: torch.Tensor,
        labels: torch.Tensor,
        eps: float,
        *,
        bounds: Bounds,
        ctx: AttackContext,
    ) -> torch.Tensor:
        """The shared perturbation ``(1, C, H, W)`` learned on ``x`` ``(S, C, H, W)``."""
        low, high = bounds.low, bounds.high
        delta = torch.zeros_like(x[:1])
        direction = -1.0 if self.targeted else 1.0
        for _ in range(self.steps):
            grad, _ = ctx.loss_gradient(model, (x + delta).clamp(low, high), labels)
            delta = (delta + direction * self.rel_step_size * eps * grad.sum(0, keepdim=True).sign()).clamp(-eps, eps)
        return delta

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
        """One independent perturbation per eps; returns ``{"fooling": {eps label: rates}}`` for non-zero eps."""
        fooling: dict[str, Any] = {}
        for eps in epsilons:
            yield eps, self.perturb(model, x, y, eps, target=target, bounds=bounds, ctx=ctx, report=fooling)
        extras: Extras = {"fooling": fooling} if fooling else {}
        return extras

    def perturb(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        eps: float,
        *,
        target: torch.Tensor | None,
        bounds: Bounds,
        ctx: AttackContext,
        report: dict[str, Any],
    ) -> torch.Tensor:
        """``clip(x + delta)`` at ``eps``, with ``delta`` learned on the source part; adds its rates to ``report``."""
        n = x.shape[0]
        s = max(1, min(self.source_size, n // 2))
        if eps == 0:
            return x.clone()
        labels = target if self.targeted and target is not None else y
        delta = self.learn(model, x[:s], labels[:s], eps, bounds=bounds, ctx=ctx)
        x_adv = (x + delta).clamp(bounds.low, bounds.high)
        clean_pred = ctx.logits(model, x).argmax(1)
        adv_pred = ctx.logits(model, x_adv).argmax(1)
        eligible = clean_pred == y
        fooled = self._fooled(adv_pred, y, target) & eligible
        src, held = eligible[:s], eligible[s:]
        report[eps_label(eps)] = {
            "source_size": s,
            "heldout_size": n - s,
            "source_fooling_rate": float(fooled[:s][src].float().mean()) if bool(src.any()) else None,
            "transfer_fooling_rate": float(fooled[s:][held].float().mean()) if bool(held.any()) else None,
        }
        return x_adv
