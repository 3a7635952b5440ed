"""The attack contract (DESIGN.md, convention 3), in the spirit of foolbox.

An attack is a frozen, keyword-only dataclass: its fields are its
hyperparameters, ``repr(attack)`` is its identity in logs and :meth:`Attack.params`
is what results and MLflow record. A subclass implements one algorithm hook:

* :meth:`Attack.run` maps ``(model, x, y, eps, target, bounds, ctx)`` to
  adversarial inputs of the same shape (or, for a *ray* attack, to a :class:`Ray`);
* optionally :meth:`Attack.run_sweep`, for attacks whose cost does not grow
  with the number of epsilons: a generator of ``(eps, x_adv)`` that may
  ``return`` a dict of extras (JSON-able reports, e.g. steps used per eps).

Two class attributes are performance properties, not hooks:

* ``ray = True``: the example at every eps is ``clip(x + eps * d)`` for one
  direction ``d`` (FGSM/FGM): :meth:`run` returns ``Ray(d)`` once, and the base
  checks ``d``, projects it onto the unit ball and builds every example itself;
* ``pooled = True``: every model call goes through ``ctx.logits``/``ctx.loss_gradient``,
  so the runner may hand the attack several batches at once (``ctx.batch_size``
  splits the model calls) and early exit keeps model batches full.

The final public :meth:`Attack.__call__` and :meth:`Attack.sweep` do the
bookkeeping: they validate epsilons and shapes, resolve targets once, and
whatever the subclass returned, check its shape, dtype and finiteness, project
it onto the epsilon ball and clip it to the data bounds.

Shapes and ranges: ``x`` is ``(N, C, H, W)`` float in ``bounds`` (pixel space,
normally [0, 1]); ``y`` and ``target`` are int64 ``(N,)``; ``eps`` is in pixel
units of the bounds, measured in :attr:`Attack.norm`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, final

import torch
from torch import nn

from bench import limits
from bench.attacks import bpda as _bpda
from bench.attacks.abilities import Abilities
from bench.attacks.bpda import BpdaOption
from bench.attacks.context import AttackContext, AttackError, derive_seed
from bench.attacks.geometry import along_ray, perturbation_norms, project, unit_direction
from bench.attacks.targets import TARGET_MODES, TargetMode, choose_targets, resolve_targets
from bench.types import Bounds, Norm, parse_eps

Extras = dict[str, Any]
"""Attack-specific reports of one sweep (JSON-able), keyed by name."""

SweepSteps = Generator[tuple[float, "torch.Tensor | Ray"], None, Extras | None]
"""What :meth:`Attack.run_sweep` is: yields ``(eps, x_adv)``, returns extras (or ``None``)."""


@dataclass(frozen=True)
class Ray:
    """A ray attack's answer: the example at eps is ``clip(x + eps * direction)``; ``direction`` shaped like ``x``."""

    direction: torch.Tensor


class Sweep(Iterator[tuple[float, torch.Tensor]]):
    """The public sweep: iterate ``(eps, x_adv)``; then read :attr:`extras`.

    Attributes:
        targets: the target classes ``(N,)`` this sweep uses (resolved once, before any step), or ``None``.
        extras: what the attack reported, complete once the iteration is exhausted.
    """

    def __init__(self, steps: Generator[tuple[float, torch.Tensor], None, Extras | None], targets: Any) -> None:
        self._steps = steps
        self.targets: torch.Tensor | None = targets
        self.extras: Extras = {}

    def __next__(self) -> tuple[float, torch.Tensor]:
        try:
            return next(self._steps)
        except StopIteration as stop:
            self.extras = dict(stop.value or {})
            raise


@dataclass(frozen=True, kw_only=True)
class Attack:
    """Base class of every attack.

    Class attributes a subclass sets:
        uses_gradients: whether :attr:`AttackContext.grad_evals` is meaningful.
        supports_targeted: whether ``targeted=True`` is allowed (see :class:`TargetedAttack`).
        ray, pooled: performance properties (module docstring).
    Set at registration (``@ATTACKS.register(name, abilities=...)``): ``name`` and ``abilities``.

    Fields every attack has:
        norm: the norm eps is measured in (each attack lists its own).
        targeted: drive samples to a target class (only where ``supports_targeted``).
        bpda: gradient attacks only (``uses_gradients``): run with the model's declared
            non-differentiable layers in BPDA mode, exact forward and surrogate backward
            (:mod:`bench.attacks.bpda`); a model that declares none is an error, unless
            ``"auto"`` (then the plain attack runs on it). Omitted from :meth:`params` and ``repr``
            while ``False``, so results recorded before it existed keep their identity.
    """

    name: ClassVar[str] = ""
    abilities: ClassVar[Abilities | None] = None
    uses_gradients: ClassVar[bool] = True
    supports_targeted: ClassVar[bool] = False
    ray: ClassVar[bool] = False
    pooled: ClassVar[bool] = False

    norm: Norm = Norm.LINF
    targeted: bool = False
    bpda: BpdaOption = field(default=False, metadata={"omit_default": True})

    def __post_init__(self) -> None:
        object.__setattr__(self, "norm", _coerce_norm(self.norm, self.allowed_norms()))
        if self.targeted and not self.supports_targeted:
            raise AttackError(f"{self.name}: targeted mode is not supported")
        _bpda.check_option(self.name, self.bpda, uses_gradients=self.uses_gradients)
        mode = self.target_selection
        if mode not in TARGET_MODES:
            raise AttackError(f"{self.name}: target_mode {mode!r} is not allowed (allowed: {', '.join(TARGET_MODES)})")
        for name in (f.name for f in dataclasses.fields(self)):  # amounts of work: capped wherever they come from
            problem = limits.work_problem(name, getattr(self, name))
            if problem is not None:
                raise AttackError(f"{self.name}: {problem}")
        self.check_params()

    # -- what subclasses implement --------------------------------------------------
    @classmethod
    def allowed_norms(cls) -> tuple[Norm, ...]:
        return (Norm.LINF,)

    def check_params(self) -> None:
        """Raise :class:`AttackError` for invalid hyperparameters (ART's ``_check_params``)."""

    @property
    def target_selection(self) -> TargetMode:
        """How targets are chosen when none are given (:class:`TargetedAttack` declares a field)."""
        return "random"

    def run(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        eps: float,
        *,
        target: torch.Tensor | None,
        bounds: Bounds,
        ctx: AttackContext,
    ) -> torch.Tensor | Ray:
        """The algorithm: adversarial inputs like ``x`` at ``eps`` (a ray attack: ``Ray(d)``, eps unused)."""
        raise NotImplementedError(f"{type(self).__name__} implements neither run nor run_sweep")

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
        """Default sweep: one independent :meth:`run` per epsilon, no extras."""
        for eps in epsilons:
            yield eps, self.run(model, x, y, eps, target=target, bounds=bounds, ctx=ctx)
        return None

    # -- identity ---------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        """Hyperparameters as JSON-able values (the attack's identity)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("omit_default") and value is f.default:
                continue
            out[f.name] = value.value if isinstance(value, Norm) else value
        return out

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{self.name or type(self).__name__}({args})"

    @property
    def bounded(self) -> bool:
        """Whether eps bounds the perturbation (eps = 0 must return the input)."""
        declared = self.abilities.bounded if self.abilities is not None else True
        return declared and self.norm is not Norm.NONE

    # -- public calls: bookkeeping around the algorithm ----------------------------
    @final
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
        """Adversarial inputs for one epsilon, same shape and dtype as ``x``.

        At eps 0 (linf, l2, l0; ``x`` within ``bounds``) the result is ``x`` itself, detached:
        clone it before writing into it in place.
        """
        ((_, x_adv),) = list(self.sweep(model, x, y, [eps], target=target, bounds=bounds, ctx=ctx))
        return x_adv

    @final
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
    ) -> Sweep:
        """``(eps, x_adv)`` for each epsilon, in the order given, as a :class:`Sweep`.

        Targets are resolved here, once (``target``: explicit classes, else the
        attack's ``target_mode``), and exposed as ``Sweep.targets``. Whatever the
        algorithm returns is checked for shape, dtype and finiteness, projected
        onto the eps ball and clipped to ``bounds``. At eps 0 that projection is
        ``x`` itself (linf, l2 and l0 budgets), and when ``x`` lies in ``bounds`` the sweep yields ``x``
        (detached: the same memory, not a copy), whose logits ``ctx`` then computes
        once for the caller's clean pass and eps-0 scoring alike.
        """
        ctx = ctx if ctx is not None else AttackContext()
        eps_list = [parse_eps(e) for e in epsilons]
        if not eps_list:
            raise AttackError(f"{self.name}: empty epsilon list")
        if x.ndim < 2 or y.shape != (x.shape[0],):
            raise AttackError(f"{self.name}: x must be (N, ...) and y (N,), got {tuple(x.shape)} and {tuple(y.shape)}")
        x = x.detach()
        y = y.to(device=x.device, dtype=torch.long)
        _bpda.check_model(self.name or type(self).__name__, self.bpda, model)
        ctx.track_clean(x)
        resolved = self.targets(model, x, y, target=target, ctx=ctx)
        return Sweep(self._steps(model, x, y, eps_list, target=resolved, bounds=bounds, ctx=ctx), resolved)

    def _steps(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        eps_list: list[float],
        *,
        target: torch.Tensor | None,
        bounds: Bounds,
        ctx: AttackContext,
    ) -> Generator[tuple[float, torch.Tensor], None, Extras | None]:
        # At eps 0 a budgeted attack's example (linf, l2, l0) is the projection of its output onto
        # {x} clipped to the bounds: ``x`` itself when ``x`` lies in them. Yielding the input tensor
        # (not a copy) lets the caller's scoring reuse the clean logits (AttackContext.track_clean).
        # Unbounded (none) and patch attacks enforce their budget themselves: their output stands.
        unmoved = yields_input_at_zero(self, eps_list) and _within(x, bounds)
        if self.ray:
            # One direction serves every eps. It is checked (shape, finite) and projected onto the
            # unit ball once; then ``x + eps * d`` lies in the eps ball by construction, and each
            # example costs two element-wise passes (build, clip) instead of a re-projection.
            d = self.ray_direction(model, x, y, target=target, bounds=bounds, ctx=ctx)
            for eps in eps_list:
                yield eps, x if eps == 0 and unmoved else along_ray(x, d, eps, bounds)
            return None
        steps = self.run_sweep(model, x, y, eps_list, target=target, bounds=bounds, ctx=ctx)
        while True:
            try:
                with self.gradient_scope(model):  # entered per step: never left on while the caller runs
                    eps, x_adv = next(steps)
            except StopIteration as stop:
                return stop.value
            checked = self._checked(x_adv, x, eps, bounds)  # checked at eps 0 too: a NaN is a broken attack
            yield eps, x if eps == 0 and unmoved else checked

    def gradient_scope(self, model: nn.Module) -> contextlib.AbstractContextManager[Any]:
        """Where this attack computes gradients of ``model``: BPDA mode per its ``bpda`` option, else as is."""
        return _bpda.option_scope(model, self.bpda, who=self.name or type(self).__name__)

    @final
    def targets(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        target: torch.Tensor | None,
        ctx: AttackContext,
    ) -> torch.Tensor | None:
        """The target classes ``(N,)`` a call will use (``None`` when untargeted); given ones are validated."""
        if not self.targeted:
            return None
        return choose_targets(model, x, y, self.target_selection, given=target, ctx=ctx)

    def _checked(self, x_adv: torch.Tensor | Ray, x: torch.Tensor, eps: float, bounds: Bounds) -> torch.Tensor:
        if isinstance(x_adv, Ray):
            return along_ray(x, unit_direction(x_adv.direction, x, self.norm, who=repr(self)), eps, bounds)
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

    @final
    def ray_direction(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        target: torch.Tensor | None,
        bounds: Bounds = Bounds(),
        ctx: AttackContext,
    ) -> torch.Tensor:
        """A ray attack's direction ``(N, C, H, W)``: :meth:`run` once, checked and projected onto the unit ball."""
        with self.gradient_scope(model):
            out = self.run(model, x, y, 1.0, target=target, bounds=bounds, ctx=ctx)
        if not isinstance(out, Ray):
            raise AttackError(f"{self!r} sets ray = True but its run returned {type(out).__name__}, not a Ray")
        return unit_direction(out.direction, x, self.norm, who=repr(self))


_BALLS = (Norm.LINF, Norm.L2, Norm.L0)
"""Norms whose eps-0 projection is the input itself (:func:`~bench.attacks.geometry.project`)."""


def yields_input_at_zero(attack: Attack, epsilons: Iterable[float]) -> bool:
    """Whether a sweep of ``attack`` over ``epsilons`` yields its (in-bounds) input itself at eps 0.

    Then the clean pass of a cell and its eps-0 scoring are one forward pass
    (:meth:`Attack.sweep`); otherwise the clean pass is a forward of its own.
    """
    return attack.norm in _BALLS and any(float(e) == 0.0 for e in epsilons)


def _within(x: torch.Tensor, bounds: Bounds) -> bool:
    """Whether every value of ``x`` lies in ``bounds`` (one reduction pass; False for NaN)."""
    if x.numel() == 0:
        return True
    low, high = torch.aminmax(x)
    return bool(low >= bounds.low) and bool(high <= bounds.high)


@dataclass(frozen=True, kw_only=True)
class TargetedAttack(Attack):
    """An attack that can be targeted: declares ``target_mode`` ("random", "least_likely" or "given")."""

    supports_targeted: ClassVar[bool] = True

    target_mode: TargetMode = "random"

    @property
    def target_selection(self) -> TargetMode:
        return self.target_mode


def _coerce_norm(value: object, allowed: tuple[Norm, ...]) -> Norm:
    try:
        norm = Norm(value)
    except ValueError:
        raise AttackError(f"unknown norm {value!r} (allowed: {', '.join(n.value for n in allowed)})") from None
    if norm not in allowed:
        raise AttackError(f"norm {norm.value!r} is not supported here (allowed: {', '.join(n.value for n in allowed)})")
    return norm


__all__ = [
    "Attack",
    "AttackContext",
    "AttackError",
    "Extras",
    "Ray",
    "Sweep",
    "SweepSteps",
    "TargetMode",
    "TargetedAttack",
    "derive_seed",
    "perturbation_norms",
    "project",
    "resolve_targets",
    "yields_input_at_zero",
]
