"""A model as a chain of layers a certifier can bound, or a clear error naming the first one it cannot.

Certifiers bound a network layer by layer, so the model must be a chain: nested ``nn.Sequential``
containers are flattened (the zoo's ``Classifier`` is one), ``nn.Identity`` and ``nn.Dropout`` (eval mode)
are dropped, and every other leaf must be a type the certifier declares. A model with its own ``forward``
(branches, skips) is refused, naming its type: bounding it needs a graph, which these certifiers do not build.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from bench.attacks.bpda import NonDifferentiable
from bench.layers import Normalize

AFFINE = (nn.Linear, nn.Conv2d, Normalize, nn.BatchNorm1d, nn.BatchNorm2d, nn.AvgPool2d, nn.Flatten)
"""Layers that are affine maps of their input (BatchNorm in eval mode)."""
AFFINE_PER_CHANNEL = (Normalize, nn.BatchNorm1d, nn.BatchNorm2d)
"""Affine layers that scale and shift each channel (:func:`per_channel_affine`)."""
PASS_THROUGH = (nn.Identity, nn.Dropout)
"""Layers that are the identity in eval mode."""


class CertifyError(ValueError):
    """A model, a layer or an argument a certifier cannot handle; the message names it and the certifier."""


def layer_name(layer: nn.Module) -> str:
    return type(layer).__name__


def chain(model: nn.Module, *, certifier: str, supported: Sequence[type[nn.Module]]) -> list[nn.Module]:
    """The leaf layers of ``model`` in order; raises :class:`CertifyError` for a layer ``certifier`` cannot bound."""
    layers: list[nn.Module] = []

    def walk(module: nn.Module, path: str) -> None:
        where = f"layer {path}" if path else "the model"
        if module._forward_hooks or module._forward_pre_hooks:
            raise CertifyError(f"{certifier}: cannot bound {where} ({layer_name(module)} with forward hooks)")
        base = next((t for t in (nn.Sequential, *PASS_THROUGH, *supported) if isinstance(module, t)), None)
        if base is not None and type(module).forward is not base.forward:  # a subclass computing something else
            raise CertifyError(
                f"{certifier}: cannot bound {where} ({layer_name(module)} overrides {base.__name__}.forward); "
                "it bounds chains of unmodified layers"
            )
        if isinstance(module, nn.Sequential):
            for name, child in module.named_children():
                walk(child, f"{path}.{name}" if path else name)
            return
        if isinstance(module, PASS_THROUGH):
            return
        if isinstance(module, tuple(supported)):
            if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d) and module.training:
                raise CertifyError(f"{certifier}: layer {path} (BatchNorm) is in training mode; call model.eval()")
            layers.append(module)
            return
        allowed = ", ".join(sorted({t.__name__ for t in supported} | {"Sequential", "Identity", "Dropout"}))
        what = (
            "a non-differentiable layer"
            if isinstance(module, NonDifferentiable)
            else f"layer type {layer_name(module)}"
        )
        where = f"layer {path}" if path else "the model"
        raise CertifyError(
            f"{certifier}: cannot bound {where} ({what}); it bounds chains (nn.Sequential) of: {allowed}"
        )

    walk(model, "")
    if not layers:
        raise CertifyError(f"{certifier}: the model has no layer to bound")
    return layers


def per_channel_affine(layer: nn.Module, ndim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, shift)`` of a per-channel affine layer (Normalize, BatchNorm in eval mode), shaped to broadcast."""
    if isinstance(layer, Normalize):
        scale = 1.0 / layer.std
        return scale, -layer.mean * scale
    assert isinstance(layer, nn.BatchNorm1d | nn.BatchNorm2d)
    var, mean = layer.running_var, layer.running_mean
    if var is None or mean is None:
        raise CertifyError(
            "BatchNorm without running statistics (track_running_stats=False) is not affine in eval mode"
        )
    weight = layer.weight if layer.weight is not None else torch.ones_like(var)
    bias = layer.bias if layer.bias is not None else torch.zeros_like(mean)
    scale = weight / torch.sqrt(var + layer.eps)
    shift = bias - mean * scale
    shape = (1, -1) + (1,) * (ndim - 2)
    return scale.view(shape), shift.view(shape)
