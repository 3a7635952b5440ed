"""Adversarial training: one batch's loss under PGD-AT (Madry et al., 2018) or TRADES (Zhang et al., 2019).

A recipe with ``adv: pgd`` trains on the examples of the harness's own pooled
:class:`~bench.attacks.pgd.PGD` (random start, ``adv_steps`` steps of
``adv_rel_step_size * eps``, no early exit: the inner maximisation runs every
step, as in Madry et al.), called through its public ``__call__`` with an
:class:`~bench.attacks.context.AttackContext` seeded per (seed, epoch, step), so
training stays deterministic for a seed and uses the same projection, clipping
and step code that the benchmark attacks with.

``adv: trades`` maximises a different inner loss, the KL divergence between
the clean and the perturbed prediction (no label), which PGD's cross-entropy
ascent cannot express; its loop is written here on top of the same helpers as
PGD's (:func:`~bench.attacks.iterative.project_delta`,
:func:`~bench.attacks.iterative.l2_step_direction`, the context's seeded
generators and gradient counter). The outer loss is
``CE(f(x), y) + adv_beta * KL(f(x) || f(x_adv))``.

``adv_ramp_epochs``: eps grows linearly, per step, from 0 to ``adv_eps`` over
the first that many epochs (a warm-up that small networks need to start
learning at all under a large eps), then stays at ``adv_eps``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bench.attacks.context import AttackContext, derive_seed
from bench.attacks.iterative import l2_step_direction, project_delta
from bench.attacks.pgd import PGD
from bench.types import Bounds, Norm

ADV_MODES = ("none", "pgd", "trades")
"""Values of the recipe field ``adv``."""


@dataclass(frozen=True, kw_only=True)
class AdversarialLoss:
    """The training loss of one batch under an adversarial recipe (see the module docstring).

    Args:
        mode: "pgd" or "trades".
        eps: the training radius (pixel units of ``norm``).
        norm: "linf" or "l2".
        steps: inner steps per batch.
        rel_step_size: inner step as a fraction of the current eps.
        ramp_epochs: epochs of the linear eps warm-up (0: full eps from the first step).
        beta: TRADES' weight of the KL term.
        bounds: the data bounds every inner step clips to.
        seed: the training seed (each batch's context seed is derived from it, the epoch and the step).
    """

    mode: str
    eps: float
    norm: str
    steps: int
    rel_step_size: float
    ramp_epochs: int
    beta: float
    bounds: Bounds
    seed: int

    @property
    def attack(self) -> PGD:
        """The harness's PGD as the inner maximisation: random start, every step taken (no early exit)."""
        return PGD(norm=self.norm, steps=self.steps, rel_step_size=self.rel_step_size, early_stop=False)

    def eps_at(self, epoch: int, step: int, steps_per_epoch: int) -> float:
        """The radius of step ``step`` (0-based) of epoch ``epoch`` (0-based): linear ramp, then ``eps``."""
        if self.ramp_epochs <= 0:
            return self.eps
        done = (epoch * steps_per_epoch + step + 1) / (self.ramp_epochs * steps_per_epoch)
        return self.eps * min(1.0, done)

    def __call__(
        self, model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, *, eps: float, epoch: int, step: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(loss, clean_logits, adv_logits)`` of a batch; the loss has the graph for ``backward()``."""
        ctx = AttackContext(seed=derive_seed("adversarial-training", self.seed, epoch, step))
        was_training = model.training
        model.eval()  # the inner maximisation sees the model as the attacks will (BatchNorm statistics frozen)
        try:
            if self.mode == "trades":
                x_adv = self._trades_examples(model, xb, eps, ctx)
            else:
                x_adv = self.attack(model, xb, yb, eps, bounds=self.bounds, ctx=ctx)
        finally:
            model.train(was_training)
        if self.mode == "trades":
            clean_logits = model(xb)
            adv_logits = model(x_adv)
            kl = F.kl_div(F.log_softmax(adv_logits, 1), F.softmax(clean_logits, 1), reduction="batchmean")
            return F.cross_entropy(clean_logits, yb) + self.beta * kl, clean_logits.detach(), adv_logits.detach()
        adv_logits = model(x_adv)
        with torch.no_grad():
            clean_logits = model(xb)
        return F.cross_entropy(adv_logits, yb), clean_logits, adv_logits.detach()

    def _trades_examples(self, model: nn.Module, x: torch.Tensor, eps: float, ctx: AttackContext) -> torch.Tensor:
        """TRADES' inner maximisation of ``KL(f(x) || f(x'))`` from ``x + 0.001 * N(0, 1)``, projected like PGD."""
        x = x.detach()
        if eps <= 0:
            return x.clone()
        norm = Norm(self.norm)
        radius = torch.full((x.shape[0],), float(eps), dtype=x.dtype, device=x.device)
        step = float(eps) * self.rel_step_size
        with torch.no_grad():
            target = F.softmax(ctx.logits(model, x), 1)
        delta = project_delta(0.001 * ctx.randn_like(x, "trades-start"), radius, norm)
        x_adv = (x + delta).clamp(self.bounds.low, self.bounds.high)
        for _ in range(self.steps):
            x_adv.requires_grad_(True)
            with torch.enable_grad():
                kl = F.kl_div(F.log_softmax(model(x_adv), 1), target, reduction="sum")
                grad = ctx.objective_gradient(x_adv, kl)
            ctx.forward_evals += int(x.shape[0])
            direction = grad.sign() if norm is Norm.LINF else l2_step_direction(grad)
            moved = (x_adv.detach() + step * direction).clamp(self.bounds.low, self.bounds.high)
            x_adv = x + project_delta(moved - x, radius, norm)
        return x_adv.detach()
