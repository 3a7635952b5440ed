"""Worst case over candidate perturbations, for attacks that search without gradients (noise, occlusion)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from bench.attacks.base import AttackContext


def worst_of(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, candidates: Iterable[torch.Tensor], *, ctx: AttackContext
) -> torch.Tensor:
    """Per sample, the first candidate that is misclassified, else the one with the highest label loss.

    ``x`` ``(N, C, H, W)``; each candidate has the shape of ``x``. Returns
    ``x`` itself when there are no candidates. A sample's first misclassified
    candidate is final, so later candidates are scored on the samples not yet
    misclassified only, and none is drawn once every sample is: at most one
    forward pass per candidate and sample (counted in ``ctx.forward_evals``).
    """
    n = x.shape[0]
    best = x.clone()
    best_score = torch.full((n,), -torch.inf, device=x.device)
    active = torch.arange(n, device=x.device)  # samples no candidate has misclassified yet
    for cand in candidates:
        every = active.numel() == n
        rows, labels = (cand, y) if every else (cand[active], y[active])
        logits = ctx.logits(model, rows)
        loss = F.cross_entropy(logits, labels, reduction="none")
        # A misclassified candidate beats any loss; the strict comparison keeps the first one found.
        fooled = logits.argmax(1) != labels
        score = torch.where(fooled, torch.full_like(loss, torch.inf), loss)
        better = score > best_score[active]
        best[active[better]] = rows[better]
        best_score[active[better]] = score[better]
        if bool(fooled.any()):
            active = active[~fooled]
            if active.numel() == 0:
                break
    return best
