"""The losses, the step-size schedule and the pieces of one step of APGD (Croce & Hein, ICML 2020).

Every loss maps ``(logits (N, K), labels (N,), targets (N,) or None)`` to a
per-sample loss ``(N,)`` that the attack *ascends*:

* ``ce``: the cross-entropy of the label; targeted, minus the cross-entropy of the target;
* ``dlr``: the difference of logits ratio, ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)``,
  invariant to shifting and scaling the logits (needs K >= 3);
* targeted ``dlr``: ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)`` (needs K >= 4),

where ``z_pi1 >= z_pi2 >= ...`` are the sorted logits of the sample.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bench.attacks.context import AttackContext, AttackError
from bench.attacks.iterative import project_delta
from bench.types import Bounds, Norm

LOSSES: tuple[str, ...] = ("ce", "dlr")
"""The losses an APGD attack may ascend."""

DLR_EPSILON = 1e-12
"""Added to the DLR denominator (as the reference implementation does): a sample whose sorted logits tie is not NaN."""

LossFn = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]
"""``(logits (N, K), labels (N,), targets (N,) or None) -> per-sample loss (N,)`` to be ascended."""


def ce_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample cross-entropy of ``y`` ``(N,)``; with ``target``, minus the cross-entropy of the target."""
    if target is None:
        return F.cross_entropy(logits, y, reduction="none")
    return -F.cross_entropy(logits, target, reduction="none")


def dlr_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample DLR loss ``(N,)`` of logits ``(N, K)`` (K >= 3); ``target`` unused (see :func:`targeted_dlr_loss`)."""
    ordered = logits.sort(dim=1, descending=True).values
    z_y = logits.gather(1, y.view(-1, 1)).squeeze(1)
    top_is_y = logits.argmax(dim=1) == y
    z_other = torch.where(top_is_y, ordered[:, 1], ordered[:, 0])  # the largest logit that is not y's
    return -(z_y - z_other) / (ordered[:, 0] - ordered[:, 2] + DLR_EPSILON)


def targeted_dlr_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """Per-sample targeted DLR loss ``(N,)`` of logits ``(N, K)`` (K >= 4) toward ``target`` ``(N,)``."""
    if target is None:
        raise AttackError("the targeted DLR loss needs target classes")
    ordered = logits.sort(dim=1, descending=True).values
    z_y = logits.gather(1, y.view(-1, 1)).squeeze(1)
    z_t = logits.gather(1, target.view(-1, 1)).squeeze(1)
    return -(z_y - z_t) / (ordered[:, 0] - 0.5 * (ordered[:, 2] + ordered[:, 3]) + DLR_EPSILON)


def loss_function(loss: str, *, targeted: bool) -> LossFn:
    """The loss ``loss`` ("ce" or "dlr") in its untargeted or targeted form."""
    if loss == "ce":
        return ce_loss
    if loss == "dlr":
        return targeted_dlr_loss if targeted else dlr_loss
    raise AttackError(f"unknown APGD loss {loss!r} (allowed: {', '.join(LOSSES)})")


def min_classes(loss: str, *, targeted: bool) -> int:
    """The fewest classes the loss is defined for (DLR sorts three logits, targeted DLR four)."""
    if loss == "dlr":
        return 4 if targeted else 3
    return 2


def check_classes(name: str, loss: str, logits: torch.Tensor, *, targeted: bool) -> None:
    """Raise :class:`AttackError` when the model's logits ``(N, K)`` have too few classes for ``loss``."""
    need, have = min_classes(loss, targeted=targeted), int(logits.shape[1])
    if have < need:
        raise AttackError(f"{name}: the {loss} loss needs at least {need} classes, the model has {have}")


def checkpoint_fractions() -> list[float]:
    """The paper's ``p_j``: ``p_0 = 0``, ``p_1 = 0.22``, ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``.

    Listed while ``p_j <= 1``.
    """
    p = [0.0, 0.22]
    while True:
        nxt = p[-1] + max(p[-1] - p[-2] - 0.03, 0.06)
        if nxt > 1:
            return p
        p.append(nxt)


def checkpoints(steps: int) -> list[int]:
    """The checkpoint iterations ``w_j = ceil(p_j * steps)``, ascending and distinct, ``w_0 = 0``.

    For 100 steps: ``[0, 22, 41, 57, 70, 80, 87, 93, 99]``. The product is rounded to
    nine decimals first, so that float noise (``0.57 * 100 = 57.00000000000001``) does
    not push a checkpoint one iteration late.
    """
    out: list[int] = []
    for p in checkpoint_fractions():
        w = math.ceil(round(p * steps, 9))
        if not out or w > out[-1]:
            out.append(w)
    return out


# -- the pieces of one step --------------------------------------------------------------
def col(t: torch.Tensor, ndim: int) -> torch.Tensor:
    """``(N,)`` -> ``(N, 1, ..., 1)`` to broadcast against ``ndim``-d inputs."""
    return t.view(-1, *([1] * (ndim - 1)))


def uniform_radius(values: torch.Tensor) -> float | None:
    """The single value of ``values`` when all are equal, else ``None`` (a scalar clamp is one fast pass)."""
    if values.numel() == 0:
        return 0.0
    first = values.flatten()[0]
    return float(first) if bool((values == first).all()) else None


def loss_and_gradient(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    target: torch.Tensor | None,
    loss_fn: LossFn,
    ctx: AttackContext,
    *,
    gradient: bool,
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """``(grad of the summed loss or None, per-sample loss (N,), logits (N, K))`` at ``x`` ``(N, C, H, W)``.

    Model calls take at most ``ctx.batch_size`` samples (each sample's gradient does not
    depend on the others); counts N forwards, and N gradients when ``gradient``.
    """
    n = int(x.shape[0])
    ctx.forward_evals += n
    ctx.grad_evals += n if gradient else 0
    size = ctx.batch_size if ctx.batch_size and ctx.batch_size < n else max(n, 1)
    grads, losses, logits_parts = [], [], []
    for i in range(0, n, size):
        part = slice(i, min(i + size, n))
        xp = x[part].detach().requires_grad_(gradient)
        with torch.set_grad_enabled(gradient):
            logits = model(xp)
            loss = loss_fn(logits, y[part], None if target is None else target[part])
            if gradient:
                (grad,) = torch.autograd.grad(loss.sum(), xp)
                grads.append(grad)
        losses.append(loss.detach())
        logits_parts.append(logits.detach())
    if len(losses) == 1:
        return (grads[0] if gradient else None), losses[0], logits_parts[0]
    return (torch.cat(grads) if gradient else None), torch.cat(losses), torch.cat(logits_parts)


def project(
    z: torch.Tensor, x0: torch.Tensor, eps: torch.Tensor, norm: Norm, bounds: Bounds, *, radius: float | None = None
) -> torch.Tensor:
    """``z`` onto the ``norm`` ball of radius ``eps`` ``(N,)`` around ``x0``, then clipped to the bounds.

    ``radius``: every ``eps`` when they are all equal (see :func:`uniform_radius`), a scalar
    clamp in one pass. Clipping after the projection stays in the ball: it moves each
    coordinate toward ``x0``'s, which is in the box.
    """
    delta = z - x0
    if norm is Norm.LINF and radius is not None:
        delta = delta.clamp_(-radius, radius)
    else:
        delta = project_delta(delta, eps, norm)
    return delta.add_(x0).clamp_(bounds.low, bounds.high)


def direction(grad: torch.Tensor, norm: Norm) -> torch.Tensor:
    """The steepest-ascent direction: ``sign(grad)`` (linf) or ``grad / ||grad||_2`` per sample (l2)."""
    if norm is Norm.LINF:
        return grad.sign()
    norms = grad.reshape(grad.shape[0], -1).norm(p=2, dim=1)
    return grad / col(norms + 1e-12, grad.ndim)


def checkpoint_update(s: dict[str, Any], length: int, rho: float) -> None:
    """At a checkpoint ``length`` iterations after the last one: halve the step where condition 1 or 2 holds.

    ``s`` is the run's state (tensors per active sample). Condition 1: the loss increased
    in fewer than ``rho * length`` iterations; condition 2: the step was not halved at the
    last checkpoint and the best loss is unchanged since. Those samples move back to their
    best point (and its predecessor, for the momentum) with its gradient.
    """
    cond = (s["count"].double() < rho * length) | (~s["reduced"] & (s["f_max"] == s["f_last"]))
    s["step"] = torch.where(cond, s["step"] / 2, s["step"])
    if bool(cond.any()):
        s["x"] = torch.where(col(cond, s["x"].ndim), s["x_max"], s["x"])
        s["x_prev"] = torch.where(col(cond, s["x"].ndim), s["x_max_prev"], s["x_prev"])
        s["grad"] = torch.where(col(cond, s["grad"].ndim), s["grad_max"], s["grad"])
        s["loss"] = torch.where(cond, s["f_max"], s["loss"])
    s["reduced"] = cond
    s["f_last"] = s["f_max"].clone()
    s["count"] = torch.zeros_like(s["count"])


def initial_state(
    x0: torch.Tensor,
    start: torch.Tensor,
    y: torch.Tensor,
    target: torch.Tensor | None,
    eps: torch.Tensor,
    grad: torch.Tensor,
    loss: torch.Tensor,
) -> dict[str, Any]:
    """The state of one run, one row per still-active sample (compacted together when early exit removes some).

    ``x``/``x_prev``: the current and previous point; ``x_max``/``x_max_prev``/``grad_max``/``f_max``:
    the best point, its predecessor, gradient and loss; ``f_last``: ``f_max`` at the last checkpoint;
    ``reduced``: the step was halved there; ``count``: loss increases since; ``step``: ``2 * eps`` at first.
    """
    n = x0.shape[0]
    return {
        "idx": torch.arange(n, device=x0.device),
        "x0": x0,
        "y": y,
        "t": target,
        "eps": eps,
        "x": start,
        "x_prev": start,
        "grad": grad,
        "loss": loss,
        "x_max": start.clone(),
        "x_max_prev": start.clone(),
        "grad_max": grad.clone(),
        "f_max": loss.clone(),
        "f_last": loss.clone(),
        "reduced": torch.zeros(n, dtype=torch.bool, device=x0.device),
        "count": torch.zeros(n, dtype=torch.long, device=x0.device),
        "step": eps * 2.0,
    }
