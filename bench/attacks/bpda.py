"""BPDA (Athalye, Carlini & Wagner, ICML 2018): backward pass differentiable approximation.

A defense built on a non-differentiable layer (quantization, JPEG, thresholds)
gives gradient attacks a gradient that is zero almost everywhere, so they fail
without the model being robust (gradient masking). BPDA keeps the layer's exact
forward pass and, on the backward pass only, differentiates a surrogate ``s``
(usually the identity) in its place: the paper's ``s(x) + (f(x) - s(x)).detach()``.

A model declares such a layer by subclassing :class:`NonDifferentiable`
(``forward_exact``, optionally ``surrogate``); a gradient attack built with
``bpda=True`` (every attack's keyword-only option, :class:`~bench.attacks.base.Attack`)
runs with every declared layer of the model in BPDA mode (:func:`bpda_mode`)::

    class Threshold(NonDifferentiable):
        def forward_exact(self, x):
            return (x > 0.5).to(x.dtype)

        def surrogate(self, x):  # optional: the identity when not overridden
            return torch.sigmoid(20 * (x - 0.5))

    model = nn.Sequential(Threshold(), my_classifier)
    make_attack("pgd", bpda=True)(model, x, y, 0.2)  # forward thresholds, backward through the sigmoid

Outside BPDA mode (clean accuracy, model checks, the plain attacks) a declared
layer is its exact forward pass, gradient included. The mode is per thread
(a context variable), so a BPDA cell and a plain cell sharing one model on the
``threading`` backend do not see each other's mode.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any, Literal

import torch
from torch import nn

from bench.attacks.context import AttackError

BpdaOption = Literal[False, True, "auto"]
"""An attack's ``bpda``: ``False`` (plain gradients), ``True`` (BPDA; the model must declare a layer) or
``"auto"`` (BPDA where the model declares a layer, the plain attack where it declares none: suites that
cross one attack with defended and undefended models)."""

_ACTIVE: ContextVar[frozenset[int]] = ContextVar("bpda_active_layers", default=frozenset())
"""``id()`` of the declared layers now in BPDA mode (in this thread / context)."""


class NonDifferentiable(nn.Module):
    """Base of a layer whose gradient is useless (zero or undefined almost everywhere): declares it for BPDA.

    Subclasses implement :meth:`forward_exact` and may override :meth:`surrogate`
    (default: the identity, the usual choice for layers that approximate their
    input, such as quantization or denoising). :meth:`forward` is not overridden.
    """

    def forward_exact(self, x: torch.Tensor) -> torch.Tensor:
        """The layer's real output (used in every forward pass)."""
        raise NotImplementedError(f"{type(self).__name__} must implement forward_exact")

    def surrogate(self, x: torch.Tensor) -> torch.Tensor:
        """A differentiable approximation of :meth:`forward_exact`, same output shape; differentiated in BPDA mode."""
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        exact = self.forward_exact(x)
        if not torch.is_grad_enabled() or not x.requires_grad:
            return exact
        if id(self) not in _ACTIVE.get():
            # The true gradient: zero where forward_exact cut the graph (a comparison, an integer cast),
            # so a plain gradient attack sees zeros (and the flags fire) instead of an autograd error.
            return exact if exact.requires_grad else _ZeroGradient.apply(exact, x)
        approx = self.surrogate(x)
        if approx.shape != exact.shape:
            raise AttackError(
                f"{type(self).__name__}.surrogate returned shape {tuple(approx.shape)}, "
                f"forward_exact {tuple(exact.shape)}: BPDA needs the same shape"
            )
        # Value: exactly ``exact`` (approx - approx.detach() is exactly zero), so BPDA mode changes no
        # prediction; gradient: the surrogate's. Same gradient as the paper's s + (f - s).detach(),
        # whose value can differ from f by a rounding.
        return exact.detach() + (approx - approx.detach())


class _ZeroGradient(torch.autograd.Function):
    """``exact`` forward (a copy), a zero gradient for ``x`` backward."""

    @staticmethod
    def forward(ctx: Any, exact: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.x_meta = (x.shape, x.dtype, x.device)
        return exact.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, torch.Tensor]:
        shape, dtype, device = ctx.x_meta
        return None, torch.zeros(shape, dtype=dtype, device=device)


def declared_layers(model: nn.Module) -> list[NonDifferentiable]:
    """The :class:`NonDifferentiable` layers of ``model`` (itself included), in module order."""
    return [m for m in model.modules() if isinstance(m, NonDifferentiable)]


@contextlib.contextmanager
def bpda_mode(model: nn.Module, *, who: str = "bpda") -> Iterator[list[NonDifferentiable]]:
    """Every declared layer of ``model`` in BPDA mode inside the block: exact forward, surrogate backward.

    Raises :class:`AttackError` naming ``who`` when ``model`` declares no
    :class:`NonDifferentiable` layer (BPDA would silently change nothing).
    Yields the layers switched.
    """
    layers = declared_layers(model)
    if not layers:
        raise AttackError(no_layer_message(who, model))
    token = _ACTIVE.set(_ACTIVE.get() | {id(m) for m in layers})
    try:
        yield layers
    finally:
        _ACTIVE.reset(token)


def no_layer_message(who: str, model: nn.Module) -> str:
    """The one-line error for ``bpda: true`` on a model without a declared layer."""
    return (
        f"{who}: bpda: true needs a model with a declared non-differentiable layer, but "
        f"{type(model).__name__} declares none (subclass bench.attacks.bpda.NonDifferentiable for the layer, "
        "run without bpda, or use bpda: auto to run the plain attack on models without one)"
    )


def check_option(who: str, value: object, *, uses_gradients: bool) -> None:
    """Raise :class:`AttackError` for a ``bpda`` other than true, false or "auto", or on a gradient-free attack."""
    if not (isinstance(value, bool) or value == "auto"):
        raise AttackError(f"{who}: bpda must be true, false or auto, got {value!r}")
    if value is not False and not uses_gradients:
        raise AttackError(f"{who}: bpda: {str(value).lower()} applies to gradient attacks only ({who} uses none)")


def check_model(who: str, value: BpdaOption, model: nn.Module) -> None:
    """Raise :class:`AttackError` when ``bpda: true`` meets a model that declares no layer."""
    if value is True and not declared_layers(model):
        raise AttackError(no_layer_message(who, model))


def option_scope(model: nn.Module, value: BpdaOption, *, who: str) -> contextlib.AbstractContextManager[Any]:
    """The context an attack with ``bpda=value`` computes gradients of ``model`` in: BPDA mode or as is."""
    if value is False or (value == "auto" and not declared_layers(model)):
        return contextlib.nullcontext()
    return bpda_mode(model, who=who)


class InputQuantization(NonDifferentiable):
    """Round every pixel to one of ``levels`` evenly spaced grey levels of ``[low, high]`` (a classic defense).

    ``forward_exact``: ``low + round((x - low) * s) / s`` with ``s = (levels - 1) / (high - low)``,
    shape-preserving; its true gradient is zero almost everywhere (``torch.round``'s
    gradient is zero), which masks every gradient attack. The BPDA surrogate is the identity.
    """

    def __init__(self, levels: int = 4, *, low: float = 0.0, high: float = 1.0) -> None:
        super().__init__()
        if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
            raise ValueError(f"InputQuantization: levels must be an integer >= 2, got {levels!r}")
        if not low < high:
            raise ValueError(f"InputQuantization: need low < high, got [{low}, {high}]")
        self.levels, self.low, self.high = levels, float(low), float(high)

    def forward_exact(self, x: torch.Tensor) -> torch.Tensor:
        scale = (self.levels - 1) / (self.high - self.low)
        return torch.round((x - self.low) * scale) / scale + self.low

    def extra_repr(self) -> str:
        return f"levels={self.levels}, low={self.low:g}, high={self.high:g}"


__all__ = [
    "BpdaOption",
    "InputQuantization",
    "NonDifferentiable",
    "bpda_mode",
    "check_model",
    "check_option",
    "declared_layers",
    "no_layer_message",
    "option_scope",
]
