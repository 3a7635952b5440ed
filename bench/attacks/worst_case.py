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
    ``x`` itself when there are no candidates. Costs one forward pass per
    candidate and sample (counted in ``ctx.forward_evals``).
    """
    best = x.clone()
    best_score = torch.full((x.shape[0],), -torch.inf, device=x.device)
    for cand in candidates:
        logits = ctx.logits(model, cand)
        loss = F.cross_entropy(logits, y, reduction="none")
        # A misclassified candidate beats any loss; the strict comparison keeps the first one found.
        score = torch.where(logits.argmax(1) != y, torch.full_like(loss, torch.inf), loss)
        better = score > best_score
        best[better] = cand[better]
        best_score = torch.where(better, score, best_score)
    return best
