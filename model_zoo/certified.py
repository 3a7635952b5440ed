"""Certified training: one batch's loss under IBP (Gowal et al. 2018) or CROWN-IBP (Zhang et al. 2020).

The loss mixes the clean cross-entropy with a *verified* cross-entropy computed from sound lower bounds
``m_j`` of the margins ``logit_label - logit_j`` over the eps ball (the certifiers' own bounds,
:mod:`bench.certify`): ``kappa * CE(f(x), y) + (1 - kappa) * CE(z, y)`` with ``z_label = 0`` and
``z_j = -m_j``. ``z`` are the *verified logits*: their argmax is the label exactly when every margin bound is
positive, i.e. when ``crown``/``ibp`` would certify the sample at this eps.

The margins' bounds are ``beta * CROWN-IBP + (1 - beta) * IBP`` (``ibp``: beta is 0 throughout). Over the
first ``ramp_epochs`` epochs, per step, the paper's schedules run linearly: eps from 0 to its target, kappa
from 1 to ``kappa_end`` and beta (CROWN-IBP) from 1 to 0; after the ramp the loss is IBP's at the full eps.
A recipe usually trains at a slightly larger eps than it is certified at (the papers use 1.1x to 2x).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bench.certify.base import input_box, margin_spec
from bench.certify.chain import chain
from bench.certify.crown import CROWN_LAYERS, backward_lower
from bench.certify.ibp import interval_bounds, margin_bounds
from bench.types import Bounds, Norm

CERTIFIED_MODES = ("ibp", "crown_ibp")
"""Values of the recipe field ``adv`` that train through bounds instead of attacks."""


@dataclass(frozen=True, kw_only=True)
class Schedule:
    """Where a step stands on the ramp: the radius, the clean loss's weight and CROWN-IBP's share."""

    eps: float
    kappa: float
    beta: float


@dataclass(frozen=True, kw_only=True)
class CertifiedLoss:
    """The training loss of one batch under a certified recipe (see the module docstring).

    Args:
        mode: "ibp" or "crown_ibp".
        eps: the training radius (pixel units of ``norm``, > 0).
        norm: "linf" or "l2" (an L2 ball is bounded through its box by IBP, on the ball itself by CROWN).
        ramp_epochs: epochs of the linear ramp of eps, kappa and beta (0: the final values from the first step).
        kappa_end: the clean loss's weight after the ramp (from 0 to 1; the papers use 0 to 0.5).
        bounds: the data bounds the ball is intersected with.
    """

    mode: str
    eps: float
    norm: str
    ramp_epochs: int
    kappa_end: float
    bounds: Bounds

    def schedule(self, epoch: int, step: int, steps_per_epoch: int) -> Schedule:
        """The values at step ``step`` (0-based) of epoch ``epoch`` (0-based)."""
        done = 1.0
        if self.ramp_epochs > 0:
            done = min(1.0, (epoch * steps_per_epoch + step + 1) / (self.ramp_epochs * steps_per_epoch))
        beta = 1.0 - done if self.mode == "crown_ibp" else 0.0
        return Schedule(eps=self.eps * done, kappa=1.0 - done * (1.0 - self.kappa_end), beta=beta)

    def eps_at(self, epoch: int, step: int, steps_per_epoch: int) -> float:
        """The radius at a step (the training loop's common interface with adversarial training)."""
        return self.schedule(epoch, step, steps_per_epoch).eps

    def margins(self, model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, eps: float, beta: float) -> torch.Tensor:
        """Sound lower bounds ``(N, K-1)`` of the margins over the ball, differentiable in the weights."""
        layers = chain(model, certifier=f"{self.mode} training", supported=CROWN_LAYERS)
        norm = Norm(self.norm)
        boxes = interval_bounds(layers, *input_box(xb, eps, self.bounds))
        classes = boxes[-1][0].shape[1]
        ibp = margin_bounds(layers, boxes, yb, classes)
        if beta <= 0:
            return ibp
        spec = margin_spec(yb, classes).to(xb.dtype)
        crown = backward_lower(layers, boxes, spec, x=xb, eps=eps, norm=norm, bounds=self.bounds)
        return beta * crown + (1.0 - beta) * ibp

    def __call__(
        self, model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, *, eps: float, epoch: int, step: int, steps: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(loss, clean_logits, verified_logits)`` of a batch; the loss has the graph for ``backward()``."""
        plan = self.schedule(epoch, step, steps)
        clean_logits = model(xb)
        margins = self.margins(model, xb, yb, plan.eps, plan.beta)
        verified = verified_logits(margins, yb)
        loss = plan.kappa * F.cross_entropy(clean_logits, yb) + (1.0 - plan.kappa) * F.cross_entropy(verified, yb)
        return loss, clean_logits.detach(), verified.detach()


def verified_logits(margins: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``(N, K)`` logits that are 0 at the label and ``-m_j`` at every other class ``j`` (``margins`` ``(N, K-1)``)."""
    n, others = margins.shape
    out = margins.new_zeros(n, others + 1)
    keep = torch.ones(n, others + 1, dtype=torch.bool, device=margins.device)
    keep[torch.arange(n), y] = False
    return out.masked_scatter(keep, -margins)
