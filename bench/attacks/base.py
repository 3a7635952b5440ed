"""The attack contract (DESIGN.md, convention 3).

An attack is a frozen, keyword-only dataclass: its fields are its
hyperparameters, ``repr(attack)`` is its identity in logs and :meth:`Attack.params`
is what MLflow records. A subclass implements only the algorithm:

* :meth:`Attack._run` maps ``(model, x, y, eps, target, ctx)`` to adversarial
  inputs of the same shape, or
* :meth:`Attack._sweep`, for attacks whose cost does not grow with the number of
  epsilons, yielding ``(eps, x_adv)``, or
* :meth:`Attack._ray` with ``ray = True``, for attacks whose example at every
  eps is ``clip(x + eps * d)`` along one direction ``d`` (FGSM/FGM): one gradient
  serves every eps and the base builds the examples.

The public :meth:`Attack.__call__` and :meth:`Attack.sweep` do the bookkeeping,
as foolbox's ``__call__`` does: they validate epsilons, resolve targets, and
whatever the subclass returned, check its shape and dtype, project it onto the
epsilon ball and clip it to the data bounds (a ray's direction is checked and
projected onto the unit ball once, so every ``x + eps * d`` is in its ball).

Shapes and ranges: ``x`` is ``(N, C, H, W)`` float in ``bounds`` (pixel space,
normally [0, 1]); ``y`` and ``target`` are int64 ``(N,)``; ``eps`` is in pixel
units of the bounds, measured in :attr:`Attack.norm`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from bench.types import Bounds, Norm, parse_eps

TargetMode = Literal["random", "least_likely", "given"]
TARGET_MODES: tuple[str, ...] = ("random", "least_likely", "given")


class AttackError(ValueError):
    """Bad attack parameters or inputs, or an attack that broke its contract."""


def derive_seed(*parts: object) -> int:
    """A 63-bit seed derived from any JSON-able parts (suite seed, model, attack, eps...)."""
    digest = hashlib.sha256(json.dumps(parts, default=str, sort_keys=True).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@dataclass
class AttackContext:
    """Per-call state an attack may use: seeded randomness and cost counters.

    Random numbers are drawn on the CPU from generators seeded by
    ``(seed, *key)`` and then moved to the device, so CPU and CUDA runs draw the
    same noise.

    Attributes:
        seed: base seed (normally derived from suite seed, model and attack).
        grad_evals: number of per-sample input gradients computed so far.
        forward_evals: number of per-sample forward passes so far.
        extras: attack-specific reports (e.g. steps used per class), JSON-able.
        bounds: the data bounds of the current call (set by :meth:`Attack.sweep`), for
            iterative attacks that must clip at every step as ART does.
        batch_size: the most samples one model call may take; :meth:`logits` and
            :meth:`loss_gradient` split larger inputs (``None``: never split). A
            :attr:`Attack.pooled` attack can then be handed many batches at once.
    """

    seed: int = 0
    grad_evals: int = 0
    forward_evals: int = 0
    extras: dict[str, Any] = field(default_factory=dict)
    bounds: Bounds = field(default_factory=Bounds)
    batch_size: int | None = None

    def _chunks(self, n: int) -> list[slice]:
        """Row ranges of at most ``batch_size`` covering ``n`` rows (one range, possibly empty, if unsplit)."""
        if not self.batch_size or self.batch_size >= n:
            return [slice(0, n)]
        return [slice(i, min(i + self.batch_size, n)) for i in range(0, n, self.batch_size)]

    def generator(self, *key: object) -> torch.Generator:
        gen = torch.Generator(device="cpu")
        gen.manual_seed(derive_seed(self.seed, *key))
        return gen

    def randn_like(self, x: torch.Tensor, *key: object) -> torch.Tensor:
        return torch.randn(x.shape, generator=self.generator(*key), dtype=x.dtype).to(x.device)

    def rand_like(self, x: torch.Tensor, *key: object) -> torch.Tensor:
        return torch.rand(x.shape, generator=self.generator(*key), dtype=x.dtype).to(x.device)

    def randint(self, low: int, high: int, size: tuple[int, ...], device: torch.device, *key: object) -> torch.Tensor:
        return torch.randint(low, high, size, generator=self.generator(*key)).to(device)

    @torch.no_grad()
    def logits(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, K)`` of ``x`` without gradient (model calls of at most ``batch_size``); counts N forwards."""
        self.forward_evals += int(x.shape[0])
        parts = self._chunks(int(x.shape[0]))
        if len(parts) == 1:
            return model(x)
        return torch.cat([model(x[part]) for part in parts])

    def loss_gradient(
        self, model: nn.Module, x: torch.Tensor, labels: torch.Tensor, *, reduction: str = "sum"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Gradient of the cross-entropy loss w.r.t. ``x`` and the logits.

        The loss is summed over the batch by default, so each sample's
        gradient does not shrink with the batch size (a mean makes near-zero
        gradients underflow to exactly zero more often). Counts N gradient and
        N forward evaluations.

        Returns ``(grad, logits)`` with ``grad`` shaped like ``x``. With a
        ``batch_size`` below N and the summed loss, the model is called on
        chunks (each sample's gradient does not depend on the others).
        """
        n = int(x.shape[0])
        self.grad_evals += n
        self.forward_evals += n
        parts = self._chunks(n) if reduction == "sum" else [slice(0, n)]
        grads, all_logits = [], []
        for part in parts:  # row slices are views: an unsplit call copies nothing
            xp = x[part].detach().requires_grad_(True)
            with torch.enable_grad():
                logits = model(xp)
                loss = F.cross_entropy(logits, labels[part], reduction=reduction)
                (grad,) = torch.autograd.grad(loss, xp)
            grads.append(grad.detach())
            all_logits.append(logits.detach())
        if len(parts) == 1:
            return grads[0], all_logits[0]
        return torch.cat(grads), torch.cat(all_logits)

    def objective_gradient(self, x: torch.Tensor, objective: torch.Tensor) -> torch.Tensor:
        """Gradient of a scalar ``objective`` built from ``x`` (which requires grad)."""
        (grad,) = torch.autograd.grad(objective, x)
        self.grad_evals += int(x.shape[0])
        return grad.detach()


# -- norms and projections ---------------------------------------------------------


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1)


def perturbation_norms(x_adv: torch.Tensor, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample ``linf``, ``l2`` and ``l0`` (fraction of changed pixels) of ``x_adv - x``; each ``(N,)``."""
    delta = (x_adv - x).detach()
    flat = _flat(delta)
    pixel_changed = delta.abs().amax(dim=1) > 0 if delta.ndim == 4 else flat != 0
    return {
        "linf": flat.abs().amax(dim=1) if flat.shape[1] else torch.zeros(flat.shape[0]),
        "l2": flat.norm(p=2, dim=1),
        "l0": _flat(pixel_changed.float()).mean(dim=1),
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
        norms = _flat(delta).norm(p=2, dim=1).clamp_min(1e-12)
        delta.mul_((eps / norms).clamp(max=1.0).view(-1, *([1] * (x.ndim - 1))))
    elif norm is Norm.L0:
        delta = _project_l0(delta, eps)
    # PATCH and NONE budgets are enforced by the attack itself; only bounds here.
    return delta.add_(x).clamp_(bounds.low, bounds.high)


def _project_l0(delta: torch.Tensor, fraction: float) -> torch.Tensor:
    """Keep the ``floor(fraction * H * W)`` pixels with the largest change per sample."""
    n = delta.shape[0]
    magnitude = delta.abs().amax(dim=1) if delta.ndim == 4 else delta.abs()
    flat = magnitude.reshape(n, -1)
    k = math.floor(min(fraction, 1.0) * flat.shape[1] + 1e-9)
    if k >= flat.shape[1]:
        return delta
    keep = torch.zeros_like(flat, dtype=torch.bool)
    if k > 0:
        top = flat.topk(k, dim=1).indices
        keep.scatter_(1, top, True)
    keep = keep & (flat > 0)
    mask = keep.reshape(magnitude.shape)
    if delta.ndim == 4:
        mask = mask.unsqueeze(1)
    return delta * mask


# -- targets -----------------------------------------------------------------------


def resolve_targets(
    logits: torch.Tensor,
    y: torch.Tensor,
    mode: TargetMode,
    *,
    given: torch.Tensor | None,
    ctx: AttackContext,
) -> torch.Tensor:
    """Target classes ``(N,)`` for a targeted attack.

    ``given``: the caller's targets (validated against the number of classes);
    ``least_likely``: the class with the lowest clean logit;
    ``random``: a seeded uniform class other than the true one.
    """
    num_classes = int(logits.shape[1])
    if given is not None:
        target = given.to(device=y.device, dtype=torch.long)
        if target.shape != y.shape:
            raise AttackError(f"target shape {tuple(target.shape)} does not match labels {tuple(y.shape)}")
        if bool(((target < 0) | (target >= num_classes)).any()):
            bad = int(target[(target < 0) | (target >= num_classes)][0])
            raise AttackError(f"target class {bad} does not exist: the model has classes 0..{num_classes - 1}")
        return target
    if mode == "given":
        raise AttackError("target mode 'given' needs explicit target classes (none were passed)")
    if mode == "least_likely":
        return logits.argmin(dim=1)
    if mode == "random":
        offset = ctx.randint(1, num_classes, tuple(y.shape), y.device, "target")
        return (y + offset) % num_classes
    raise AttackError(f"unknown target mode {mode!r} (allowed: random, least_likely, given)")


# -- the contract --------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Attack:
    """Base class of every native attack.

    Class attributes a subclass sets:
        name: the registry name.
        art_counterpart: ART class that implements the same attack, or ``None``.
        art_mapping: how our parameters map onto ART's, or why there is none.
        uses_gradients: whether :attr:`AttackContext.grad_evals` is meaningful.
        ray: the example at every eps is ``clip(x + eps * d)`` for one direction ``d``
            that :meth:`_ray` returns (FGSM/FGM); the base then builds every example itself.
        pooled: every model call goes through ``ctx.logits``/``ctx.loss_gradient``, so the
            runner may hand the attack several batches at once (``ctx.batch_size`` splits
            the model calls): early exit then keeps model batches full.
    """

    name: ClassVar[str] = ""
    art_counterpart: ClassVar[str | None] = None
    art_mapping: ClassVar[str] = ""
    uses_gradients: ClassVar[bool] = True
    supports_targeted: ClassVar[bool] = False
    ray: ClassVar[bool] = False
    pooled: ClassVar[bool] = False

    norm: Norm = Norm.LINF
    targeted: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "norm", _coerce_norm(self.norm, self.allowed_norms()))
        if self.targeted and not self.supports_targeted:
            raise AttackError(f"{self.name}: targeted mode is not supported")
        mode = getattr(self, "target_mode", None)
        if mode is not None and mode not in TARGET_MODES:
            raise AttackError(f"{self.name}: target_mode {mode!r} is not allowed (allowed: {', '.join(TARGET_MODES)})")
        self.check_params()

    # -- what subclasses implement --------------------------------------------------
    @classmethod
    def allowed_norms(cls) -> tuple[Norm, ...]:
        return (Norm.LINF,)

    def check_params(self) -> None:
        """Raise :class:`AttackError` for invalid hyperparameters (ART's ``_check_params``)."""

    def _run(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        eps: float,
        *,
        target: torch.Tensor | None,
        ctx: AttackContext,
    ) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} implements neither _run nor _sweep")

    def _ray(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        target: torch.Tensor | None,
        ctx: AttackContext,
    ) -> torch.Tensor:
        """Direction ``d`` ``(N, C, H, W)`` of a ray attack (``ray = True``), in the unit ball of ``norm``."""
        raise NotImplementedError(f"{type(self).__name__} sets ray = True but does not implement _ray")

    def _sweep(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        epsilons: Sequence[float],
        *,
        target: torch.Tensor | None,
        ctx: AttackContext,
    ) -> Iterator[tuple[float, torch.Tensor]]:
        """Default sweep: one independent :meth:`_run` per epsilon."""
        for eps in epsilons:
            yield eps, self._run(model, x, y, eps, target=target, ctx=ctx)

    # -- identity ---------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        """Hyperparameters as JSON-able values (the attack's identity)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.value if isinstance(value, Norm) else value
        return out

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{self.name or type(self).__name__}({args})"

    @property
    def bounded(self) -> bool:
        """Whether eps bounds the perturbation (eps = 0 must return the input)."""
        return self.norm not in (Norm.NONE,)

    # -- public calls: bookkeeping around the algorithm ----------------------------
    def __call__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        eps: float | str,
        *,
        target: torch.Tensor | None = None,
        bounds: Bounds = Bounds(),
        ctx: AttackContext | None = None,
    ) -> torch.Tensor:
        """Adversarial inputs for one epsilon, same shape and dtype as ``x``."""
        ((_, x_adv),) = list(self.sweep(model, x, y, [eps], target=target, bounds=bounds, ctx=ctx))
        return x_adv

    def sweep(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        epsilons: Iterable[float | str],
        *,
        target: torch.Tensor | None = None,
        bounds: Bounds = Bounds(),
        ctx: AttackContext | None = None,
    ) -> Iterator[tuple[float, torch.Tensor]]:
        """Yield ``(eps, x_adv)`` for each epsilon, in the order given.

        Whatever the algorithm returned is checked for shape, dtype and
        finiteness, projected onto the eps ball and clipped to ``bounds``.
        """
        ctx = ctx if ctx is not None else AttackContext()
        ctx.bounds = bounds
        eps_list = [parse_eps(e) for e in epsilons]
        if not eps_list:
            raise AttackError(f"{self.name}: empty epsilon list")
        if x.ndim < 2 or y.shape != (x.shape[0],):
            raise AttackError(f"{self.name}: x must be (N, ...) and y (N,), got {tuple(x.shape)} and {tuple(y.shape)}")
        x = x.detach()
        y = y.to(device=x.device, dtype=torch.long)
        resolved = self.targets(model, x, y, target=target, ctx=ctx)
        if self.ray:
            # One direction serves every eps. It is checked (shape, finite) and projected onto the
            # unit ball once; then ``x + eps * d`` lies in the eps ball by construction, and each
            # example costs two element-wise passes (build, clip) instead of a re-projection.
            d = self.ray_direction(model, x, y, target=resolved, ctx=ctx)
            for eps in eps_list:
                yield eps, along_ray(x, d, eps, bounds)
            return
        for eps, x_adv in self._sweep(model, x, y, eps_list, target=resolved, ctx=ctx):
            yield eps, self._checked(x_adv, x, eps, bounds)

    def targets(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        target: torch.Tensor | None,
        ctx: AttackContext,
    ) -> torch.Tensor | None:
        """The target classes this call will use (``None`` when untargeted)."""
        if not self.targeted:
            return None
        mode: TargetMode = getattr(self, "target_mode", "random")
        logits = (
            ctx.logits(model, x) if target is None and mode == "least_likely" else _num_classes_probe(model, x, ctx)
        )
        return resolve_targets(logits, y, mode, given=target, ctx=ctx)

    def _checked(self, x_adv: torch.Tensor, x: torch.Tensor, eps: float, bounds: Bounds) -> torch.Tensor:
        if not isinstance(x_adv, torch.Tensor) or x_adv.shape != x.shape:
            shape = tuple(x_adv.shape) if isinstance(x_adv, torch.Tensor) else type(x_adv).__name__
            raise AttackError(f"{self!r} returned {shape}, expected shape {tuple(x.shape)}")
        if x_adv.dtype != x.dtype:
            x_adv = x_adv.to(x.dtype)
        out = project(x_adv.detach(), x, eps, self.norm, bounds)
        # After projection every value lies in the bounds (infinities are projected like any other
        # value) unless it is NaN, and a NaN makes the sum NaN: one reduction instead of a mask.
        if bool(torch.isnan(out.sum())):
            raise AttackError(f"{self!r} returned NaN values at eps={eps}")
        return out

    def ray_direction(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        target: torch.Tensor | None,
        ctx: AttackContext,
    ) -> torch.Tensor:
        """A ray attack's direction ``(N, C, H, W)``, checked and projected onto the unit ball of ``norm``."""
        return self._checked_direction(self._ray(model, x, y, target=target, ctx=ctx), x)

    def _checked_direction(self, d: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """A ray attack's direction, checked for shape and finiteness, projected onto the unit ball of ``norm``."""
        if not isinstance(d, torch.Tensor) or d.shape != x.shape:
            shape = tuple(d.shape) if isinstance(d, torch.Tensor) else type(d).__name__
            raise AttackError(f"{self!r} returned a direction of shape {shape}, expected {tuple(x.shape)}")
        d = d.detach().to(x.dtype)
        # A unit-ball direction sums to at most numel in magnitude: inf or NaN anywhere shows in the sum.
        if not bool(torch.isfinite(d.sum())):
            raise AttackError(f"{self!r} returned a direction with NaN or infinite values")
        if self.norm is Norm.LINF:
            return d.clamp(-1.0, 1.0)
        if self.norm is Norm.L2:
            norms = _flat(d).norm(p=2, dim=1)
            over = norms > 1.0
            if bool(over.any()):  # rows already in the ball keep their bits
                scale = torch.where(over, 1.0 / norms, torch.ones_like(norms))
                d = d * scale.view(-1, *([1] * (d.ndim - 1)))
            return d
        raise AttackError(f"{self!r}: a ray attack needs a linf or l2 norm, got {self.norm.value!r}")


def along_ray(x: torch.Tensor, d: torch.Tensor, eps: float, bounds: Bounds) -> torch.Tensor:
    """``clip(x + eps * d)``: ``x`` ``(N, ...)`` in ``bounds``, ``d`` in the unit ball; a new tensor.

    ``x + eps * d`` is one pass (a single rounding, as ART's FGSM for ``d`` in {-1, 0, 1});
    clipping to a box that contains ``x`` only moves a point toward ``x``, so the
    result stays in the eps ball.
    """
    return torch.add(x, d, alpha=eps).clamp_(bounds.low, bounds.high)


def _num_classes_probe(model: nn.Module, x: torch.Tensor, ctx: AttackContext) -> torch.Tensor:
    """Logits of one sample, enough to learn the number of classes."""
    return ctx.logits(model, x[:1]).expand(x.shape[0], -1)


def _coerce_norm(value: object, allowed: tuple[Norm, ...]) -> Norm:
    try:
        norm = Norm(value)
    except ValueError:
        raise AttackError(f"unknown norm {value!r} (allowed: {', '.join(n.value for n in allowed)})") from None
    if norm not in allowed:
        raise AttackError(f"norm {norm.value!r} is not supported here (allowed: {', '.join(n.value for n in allowed)})")
    return norm
