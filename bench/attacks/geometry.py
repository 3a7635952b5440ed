"""Norms, projections onto epsilon balls and rays: the geometry the attack contract enforces.

Shapes and ranges: ``x`` ``(N, C, H, W)`` (or ``(N, ...)``) in ``bounds``; ``eps``
in pixel units of the bounds, measured in the given :class:`~bench.types.Norm`.
"""

from __future__ import annotations

import math

import torch

from bench.attacks.context import AttackError
from bench.types import Bounds, Norm


def flat(t: torch.Tensor) -> torch.Tensor:
    """``(N, ...)`` -> ``(N, D)`` (a view when possible)."""
    return t.reshape(t.shape[0], -1)


def perturbation_norms(x_adv: torch.Tensor, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample ``linf``, ``l2`` and ``l0`` (fraction of changed pixels) of ``x_adv - x``; each ``(N,)``."""
    delta = (x_adv - x).detach()
    rows = flat(delta)
    pixel_changed = delta.abs().amax(dim=1) > 0 if delta.ndim == 4 else rows != 0
    return {
        "linf": rows.abs().amax(dim=1) if rows.shape[1] else torch.zeros(rows.shape[0]),
        "l2": rows.norm(p=2, dim=1),
        "l0": flat(pixel_changed.float()).mean(dim=1),
    }


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: Norm, bounds: Bounds) -> torch.Tensor:
    """Project ``x_adv`` onto the ``eps`` ball around ``x`` in ``norm``, then clip to ``bounds``.

    Clipping after the projection keeps the ball constraint because the box
    contains ``x`` (projection onto a convex set containing ``x`` never moves
    a point away from ``x``).
    """
    # One new tensor, then in-place passes: on a CPU a fresh batch-sized allocation costs about
    # as much as an element-wise pass, and this runs once per epsilon of every sweep.
    delta = x_adv - x
    if norm is Norm.LINF:
        delta.clamp_(-eps, eps)
    elif norm is Norm.L2:
        norms = flat(delta).norm(p=2, dim=1).clamp_min(1e-12)
        delta.mul_((eps / norms).clamp(max=1.0).view(-1, *([1] * (x.ndim - 1))))
    elif norm is Norm.L0:
        delta = _project_l0(delta, eps)
    # PATCH and NONE budgets are enforced by the attack itself; only bounds here.
    return delta.add_(x).clamp_(bounds.low, bounds.high)


def _project_l0(delta: torch.Tensor, fraction: float) -> torch.Tensor:
    """Keep the ``floor(fraction * H * W)`` pixels with the largest change per sample."""
    n = delta.shape[0]
    magnitude = delta.abs().amax(dim=1) if delta.ndim == 4 else delta.abs()
    rows = magnitude.reshape(n, -1)
    k = math.floor(min(fraction, 1.0) * rows.shape[1] + 1e-9)
    if k >= rows.shape[1]:
        return delta
    keep = torch.zeros_like(rows, dtype=torch.bool)
    if k > 0:
        top = rows.topk(k, dim=1).indices
        keep.scatter_(1, top, True)
    keep = keep & (rows > 0)
    mask = keep.reshape(magnitude.shape)
    if delta.ndim == 4:
        mask = mask.unsqueeze(1)
    return delta * mask


def unit_direction(d: torch.Tensor, x: torch.Tensor, norm: Norm, *, who: str) -> torch.Tensor:
    """A ray's direction ``d`` checked (shape, finite) and projected onto the unit ball of ``norm``.

    ``who`` names the attack in errors. Rows already in the ball keep their bits.
    """
    if not isinstance(d, torch.Tensor) or d.shape != x.shape:
        shape = tuple(d.shape) if isinstance(d, torch.Tensor) else type(d).__name__
        raise AttackError(f"{who} returned a direction of shape {shape}, expected {tuple(x.shape)}")
    d = d.detach().to(x.dtype)
    # A unit-ball direction sums to at most numel in magnitude: inf or NaN anywhere shows in the sum.
    if not bool(torch.isfinite(d.sum())):
        raise AttackError(f"{who} returned a direction with NaN or infinite values")
    if norm is Norm.LINF:
        return d.clamp(-1.0, 1.0)
    if norm is Norm.L2:
        norms = flat(d).norm(p=2, dim=1)
        over = norms > 1.0
        if bool(over.any()):  # rows already in the ball keep their bits
            scale = torch.where(over, 1.0 / norms, torch.ones_like(norms))
            d = d * scale.view(-1, *([1] * (d.ndim - 1)))
        return d
    raise AttackError(f"{who}: a ray attack needs a linf or l2 norm, got {norm.value!r}")


def along_ray(x: torch.Tensor, d: torch.Tensor, eps: float, bounds: Bounds) -> torch.Tensor:
    """``clip(x + eps * d)``: ``x`` ``(N, ...)`` in ``bounds``, ``d`` in the unit ball; a new tensor.

    ``x + eps * d`` is one pass (a single rounding, as ART's FGSM for ``d`` in {-1, 0, 1});
    clipping to a box that contains ``x`` only moves a point toward ``x``, so the
    result stays in the eps ball.
    """
    return torch.add(x, d, alpha=eps).clamp_(bounds.low, bounds.high)
