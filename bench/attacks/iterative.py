"""The iterative gradient core shared by BIM and PGD (:mod:`bench.attacks.pgd`), sweep-aware and with early exit.

One iteration follows ART's ``FastGradientMethod._compute`` exactly, so that
with ``random_start=False`` and ``early_stop=False`` our BIM/PGD reproduce
ART's ``BasicIterativeMethod`` / ``ProjectedGradientDescent``::

    d       = sign(g)                  (linf)   or   g / ||g||_2 per sample, 0 where g = 0   (l2)
    x'      = clip_bounds(x_t + step * d)
    x_{t+1} = x_0 + proj_eps(x' - x_0)  (linf: clamp to [-eps, eps]; l2: rescale to norm <= eps)

``g`` is the gradient of the cross-entropy at the true label (ascent) or, when
targeted, minus the gradient at the target class (descent toward it).
Clipping before projecting keeps the point in the box because the l2 rescale
moves it toward ``x_0``, which is in the box.

Epsilons may be per sample (a tensor ``(N,)``): the minimal-epsilon bisection
(:mod:`bench.minimal_eps`) runs one batch with a different radius per sample.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from bench.attacks.base import AttackContext, AttackError, Extras, SweepSteps, TargetedAttack
from bench.attacks.context import check_count
from bench.types import Bounds, Norm, eps_label


def _col(t: torch.Tensor, ndim: int) -> torch.Tensor:
    """``(N,)`` -> ``(N, 1, ..., 1)`` to broadcast against ``ndim``-d inputs."""
    return t.view(-1, *([1] * (ndim - 1)))


def project_delta(delta: torch.Tensor, eps: torch.Tensor, norm: Norm) -> torch.Tensor:
    """Project perturbations ``(N, ...)`` onto per-sample balls of radius ``eps`` ``(N,)`` (ART's ``_projection``)."""
    radius = _col(eps, delta.ndim)
    if norm is Norm.LINF:
        return torch.maximum(torch.minimum(delta, radius), -radius)
    # The rescaling factor is computed in float64, as ART's PyTorch PGD does: in float32 the
    # L2 projection alone differs from ART by up to 1e-2 after a few steps near the boundary.
    norms = _col(torch.linalg.norm(delta.reshape(delta.shape[0], -1), ord=2, dim=1), delta.ndim).double()
    factor = torch.where(norms == 0, norms, torch.minimum(torch.ones_like(norms), radius.double() / norms))
    return (delta.double() * factor).to(delta.dtype)


def _uniform(values: torch.Tensor) -> float | None:
    """The single value of ``values`` when all are equal (0.0 when empty), else ``None``."""
    if values.numel() == 0:
        return 0.0
    first = values.flatten()[0]
    return float(first) if bool((values == first).all()) else None


def _clamp_radius(eps: torch.Tensor, like: torch.Tensor) -> tuple[float, float] | tuple[torch.Tensor, torch.Tensor]:
    """The ``(min, max)`` of a linf clamp of ``like`` ``(N, ...)`` to per-sample radii ``eps`` ``(N,)``.

    Python floats when every radius is the same (a sweep's eps: a scalar clamp is
    one fast pass), else tensors expanded to ``like``'s shape and made contiguous
    once (a clamp against ``(N, 1, 1, 1)`` columns is ten times slower than against
    full tensors on a CPU). The clamped values are the same bits either way: the
    float32 radius is exactly representable as a float.
    """
    r = _uniform(eps)
    if r is not None:
        return -r, r
    radius = _col(eps, like.ndim).expand_as(like).contiguous()
    return -radius, radius


def l2_step_direction(grad: torch.Tensor) -> torch.Tensor:
    """``grad / ||grad||_2`` per sample, computed as ART does (times the reciprocal norm, zero stays zero).

    Mathematically equal to :func:`~bench.attacks.fgsm.fgm_direction`; the order of
    float32 operations matters for the 1e-5 agreement with ART over many steps.
    """
    flat = grad.reshape(grad.shape[0], -1)
    norms = torch.linalg.norm(flat, ord=2, dim=1, keepdim=True)
    inverse = torch.where(norms == 0, torch.ones_like(norms), 1 / norms)
    return ((flat.abs() * inverse) * flat.sign()).reshape(grad.shape)


def random_unit_start(shape: torch.Size, norm: Norm, ctx: AttackContext, *key: object) -> torch.Tensor:
    """Seeded points uniform in the unit ball of ``norm`` (scale by eps per sample), on the CPU.

    linf: uniform in [-1, 1] per pixel; l2: a Gaussian direction with radius
    ``u ** (1 / d)`` (uniform in the ball), as ART's ``random_sphere``.
    """
    gen = ctx.generator("random_start", *key)
    if norm is Norm.LINF:
        return torch.rand(shape, generator=gen) * 2 - 1
    n = shape[0]
    d = math.prod(shape[1:])
    direction = torch.randn((n, d), generator=gen)
    direction = direction / direction.norm(p=2, dim=1, keepdim=True).clamp_min(1e-12)
    radius = torch.rand((n, 1), generator=gen) ** (1.0 / d)
    return (direction * radius).reshape(shape)


@dataclass(frozen=True, kw_only=True)
class IterativeGradientAttack(TargetedAttack):
    """Shared hyperparameters and algorithm of :class:`~bench.attacks.pgd.BIM` and :class:`~bench.attacks.pgd.PGD`.

    The defaults are BIM's; PGD states only the defaults it changes.

    Args:
        norm: "linf" or "l2".
        targeted: drive samples to a target class instead of away from the label.
        target_mode: "random", "least_likely" or "given" (see :class:`~bench.attacks.fgsm.FGSM`).
        steps: gradient steps per sample and restart (>= 1).
        step_size: absolute step in pixel units of the norm; ``None`` uses ``rel_step_size * eps``.
        rel_step_size: step as a fraction of eps when ``step_size`` is ``None`` (default 0.15).
        random_start: start each restart at a seeded uniform point of the eps ball.
        restarts: number of runs (>= 1); a later run re-attacks only samples that are still robust.
        early_stop: a sample stops as soon as it is fooled (or reaches its target), keeping that example.

    Cost: at most ``steps * restarts`` gradients per sample and eps; with
    ``early_stop`` a sample stops costing as soon as it is fooled, and in a
    sweep a sample fooled at a smaller eps is not attacked again.
    """

    pooled: ClassVar[bool] = True

    steps: int = 10
    step_size: float | None = None
    rel_step_size: float = 0.15
    random_start: bool = False
    restarts: int = 1
    early_stop: bool = True

    @classmethod
    def allowed_norms(cls) -> tuple[Norm, ...]:
        return (Norm.LINF, Norm.L2)

    def check_params(self) -> None:
        name = self.name
        check_count(name, "steps", self.steps)
        if self.step_size is not None and not _positive(self.step_size):
            raise AttackError(
                f"{name}: step_size must be a finite number > 0 (pixel units) or null, got {self.step_size!r}"
            )
        if not _positive(self.rel_step_size):
            raise AttackError(f"{name}: rel_step_size must be a finite number > 0, got {self.rel_step_size!r}")
        check_count(name, "restarts", self.restarts)
        if self.restarts > 1 and not self.random_start:
            raise AttackError(f"{name}: restarts > 1 needs random_start: true (without it every restart is identical)")

    # -- one radius per sample --------------------------------------------------------
    def attack_radii(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        eps: torch.Tensor,
        *,
        target: torch.Tensor | None,
        bounds: Bounds,
        ctx: AttackContext,
        key: tuple[object, ...],
        rows: torch.Tensor | None = None,
        full_n: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Attack every sample of ``x`` ``(n, C, H, W)`` inside its own radius ``eps`` ``(n,)``.

        ``bounds``: the data bounds every step clips to.
        ``rows``: the positions of these samples in a batch of ``full_n``
        samples; random starts are drawn for the full batch and indexed, so a
        sample gets the same start whichever subset it is attacked in.

        Returns ``(x_adv, success, steps_used)``: ``success`` ``(n,)`` says
        the example is fooled (untargeted) or classified as its target.
        """
        n = x.shape[0]
        best: torch.Tensor | None = None
        success = torch.zeros(n, dtype=torch.bool, device=x.device)
        steps_used = torch.zeros(n, dtype=torch.long, device=x.device)
        for restart in range(self.restarts):
            todo = (~success).nonzero().squeeze(1)
            if todo.numel() == 0:
                break
            # The first run attacks every sample: no batch-sized gathers for it.
            every = todo.numel() == n

            def take(t: torch.Tensor, todo: torch.Tensor = todo, every: bool = every) -> torch.Tensor:
                return t if every else t[todo]

            x_todo = take(x)
            start = x_todo
            if self.random_start:
                full_shape = torch.Size((full_n if rows is not None and full_n else n, *x.shape[1:]))
                unit = random_unit_start(full_shape, self.norm, ctx, *key, restart).to(x.device, x.dtype)
                unit = unit[rows[todo]] if rows is not None else take(unit)
                start = (x_todo + unit * _col(take(eps), x.ndim)).clamp(bounds.low, bounds.high)
            adv, ok, used = self._ascend(
                model,
                x_todo,
                start,
                take(y),
                None if target is None else take(target),
                take(eps),
                bounds=bounds,
                ctx=ctx,
            )
            steps_used[todo] += used
            if best is None:  # the first run keeps its result for every sample
                best = adv
            else:
                best[todo[ok]] = adv[ok]
            success[todo] |= ok
        return (x.clone() if best is None else best), success, steps_used

    def _succeeded(self, pred: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        return pred == target if self.targeted and target is not None else pred != y

    def _ascend(
        self,
        model: nn.Module,
        x0: torch.Tensor,
        start: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        eps: torch.Tensor,
        *,
        bounds: Bounds,
        ctx: AttackContext,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``steps`` projected steps from ``start``; returns ``(x_adv, success, steps_used)``.

        The update is ART's, operation for operation (the cross-check holds it to
        1e-5): ``x' = clip_bounds(x + step * d)``, ``x = x0 + proj_eps(x' - x0)``.
        It runs in place on working copies of the still-active rows, which are
        re-selected only when early exit removes a sample, so a step costs one
        gradient and a few element-wise passes, not a gather and scatter of the batch.
        """
        ndim = x0.ndim
        labels = target if self.targeted and target is not None else y
        # Multiplying by -1 is exact, so folding the targeted sign into the step changes no bit.
        step = _col(self.step_size_for(eps) * (-1.0 if self.targeted else 1.0), ndim)
        uniform_step = _uniform(step)
        low, high = bounds.low, bounds.high
        n = x0.shape[0]
        x_adv = torch.empty_like(start)  # every row is written when its sample stops or at the end
        success = torch.zeros(n, dtype=torch.bool, device=x0.device)
        used = torch.zeros(n, dtype=torch.long, device=x0.device)
        active = torch.arange(n, device=x0.device)
        # Steps never write into the current point (each builds the next one in its gradient's
        # memory), so ``start`` is read, not copied.
        xa, x0a, la, ya, ta, ea = start, x0, labels, y, target, eps
        radius = _clamp_radius(ea, xa)
        taken = 0  # steps taken by every still-active sample
        for _ in range(self.steps):
            grad, logits = ctx.loss_gradient(model, xa, la)
            if self.early_stop:
                # The logits of the gradient pass are those of the current point: a sample
                # already fooled there stops now and keeps it.
                done = self._succeeded(logits.argmax(1), ya, ta)
                if bool(done.any()):
                    stopped = active[done]
                    x_adv[stopped] = xa[done]
                    success[stopped] = True
                    used[stopped] = taken
                    keep = ~done
                    active = active[keep]
                    if active.numel() == 0:
                        break
                    xa, x0a, la, ya, ea, grad = xa[keep], x0a[keep], la[keep], ya[keep], ea[keep], grad[keep]
                    ta = None if ta is None else ta[keep]
                    step, radius = step[keep], _clamp_radius(ea, xa)  # uniform stays uniform
            # The gradient is ours (a fresh tensor per pass): the step is built in its memory.
            d = grad.sign_() if self.norm is Norm.LINF else l2_step_direction(grad)
            if uniform_step is not None and self.norm is Norm.LINF:
                # x + step * d in one pass: step * d is exact for d in {-1, 0, 1}, so this is
                # the same single rounding as ART's multiply-then-add.
                torch.add(xa, d, alpha=uniform_step, out=d)
            else:
                d.mul_(step).add_(xa)
            d.clamp_(low, high).sub_(x0a)  # x' - x0
            if self.norm is Norm.LINF:
                d.clamp_(min=radius[0], max=radius[1])
            else:
                d = project_delta(d, ea, self.norm)
            xa = d.add_(x0a)
            taken += 1
        if active.numel():
            if active.numel() == n and taken:  # nobody stopped early: the last point is the result
                x_adv = xa
            else:
                x_adv[active] = xa
            used[active] = taken
            pred = ctx.logits(model, xa).argmax(1)
            success[active] = self._succeeded(pred, ya, ta)
        return x_adv, success, used

    def step_size_for(self, eps: torch.Tensor) -> torch.Tensor:
        """Per-sample step ``(N,)``: ``step_size`` if set, else ``rel_step_size * eps``."""
        if self.step_size is not None:
            return torch.full_like(eps, float(self.step_size))
        return eps * self.rel_step_size

    # -- the contract -------------------------------------------------------------------
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
        """Sweep-aware: ascending eps, each attacking only the samples no smaller eps has fooled.

        A sample fooled at a smaller eps keeps that example (it lies inside
        every larger ball), so the result per sample is never weaker than an
        independent run at each eps, and costs nothing more once fooled.
        Epsilons not given in ascending order are computed ascending and
        yielded in the order given. Returns extras: ``mean_steps`` and
        ``attacked`` (samples attacked) per eps label.
        """
        ascending = sorted(set(epsilons))
        extras: Extras = {}
        steps = self._ascending_sweep(model, x, y, ascending, target=target, bounds=bounds, ctx=ctx, extras=extras)
        if list(epsilons) == ascending:
            yield from steps
            return extras
        results = dict(steps)
        for eps in epsilons:
            yield eps, results[eps]
        return extras

    def _ascending_sweep(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        epsilons: Sequence[float],
        *,
        target: torch.Tensor | None,
        bounds: Bounds,
        ctx: AttackContext,
        extras: Extras,
    ) -> Iterator[tuple[float, torch.Tensor]]:
        """The sweep over ascending ``epsilons``; fills ``extras`` once done."""
        best = x.clone()
        fooled = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        mean_steps: dict[str, float] = {}
        attacked: dict[str, int] = {}
        for eps in epsilons:
            rows = (~fooled).nonzero().squeeze(1)
            if eps > 0 and rows.numel():
                radii = torch.full((rows.numel(),), float(eps), dtype=x.dtype, device=x.device)
                every = rows.numel() == x.shape[0]  # nothing fooled yet: no batch-sized gathers
                adv, ok, used = self.attack_radii(
                    model,
                    x if every else x[rows],
                    y if every else y[rows],
                    radii,
                    target=target if target is None or every else target[rows],
                    bounds=bounds,
                    ctx=ctx,
                    key=(float(eps),),
                    rows=rows,
                    full_n=x.shape[0],
                )
                if every:
                    best, fooled = adv, ok  # ours: attack_radii returns fresh tensors
                else:
                    best[rows] = adv
                    fooled[rows] = ok
                mean_steps[eps_label(eps)] = float(used.float().mean())
                attacked[eps_label(eps)] = int(rows.numel())
            yield eps, best.clone()
        extras["mean_steps"] = mean_steps
        extras["attacked"] = attacked


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0
