"""Interval bound propagation (Gowal et al. 2018): each layer maps a box of inputs to a box of outputs.

Sound and cheap (about two forward passes); loose on deep or undefended networks, tight on networks trained
with it. The margin specification is folded into the last linear layer, which tightens the certificate
(the usual IBP "elision" of the last layer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from bench.certify.base import Certifier, CertifyResult, input_box, margin_spec, result_from_margins
from bench.certify.chain import AFFINE, AFFINE_PER_CHANNEL, CertifyError, chain, per_channel_affine
from bench.types import Bounds

IBP_LAYERS: tuple[type[nn.Module], ...] = (*AFFINE, nn.ReLU, nn.MaxPool2d)
"""The layer types interval propagation bounds (chains of them)."""

Box = tuple[torch.Tensor, torch.Tensor]


def propagate(layer: nn.Module, lower: torch.Tensor, upper: torch.Tensor) -> Box:
    """The box of ``layer``'s outputs over the box ``[lower, upper]`` of its inputs (exact for monotone layers)."""
    if isinstance(layer, nn.ReLU):
        return lower.clamp_min(0), upper.clamp_min(0)
    if isinstance(layer, nn.MaxPool2d | nn.AvgPool2d):  # monotone in every input (avg: positive weights)
        return layer(lower), layer(upper)
    if isinstance(layer, nn.Flatten):
        return layer(lower), layer(upper)
    if isinstance(layer, AFFINE_PER_CHANNEL):  # each coordinate scaled by one number: map the two ends directly
        scale, shift = per_channel_affine(layer, lower.ndim)
        low, high = lower * scale + shift, upper * scale + shift
        return (low, high) if bool((scale >= 0).all()) else (torch.minimum(low, high), torch.maximum(low, high))
    # an affine map of the box's centre and radius: (u + l) / 2 and (u - l) / 2, the halves folded into the
    # (small) weights, so the (large) activations are read once for each
    total, width = upper + lower, upper - lower
    if isinstance(layer, nn.Linear):
        return _box(F.linear(total, layer.weight * 0.5, layer.bias), F.linear(width, layer.weight.abs() * 0.5))
    if isinstance(layer, nn.Conv2d):
        if layer.padding_mode != "zeros":
            raise CertifyError(f"ibp: Conv2d with padding_mode {layer.padding_mode!r} (allowed: zeros)")
        args = (layer.stride, layer.padding, layer.dilation, layer.groups)
        return _box(
            F.conv2d(total, layer.weight * 0.5, layer.bias, *args),
            F.conv2d(width, layer.weight.abs() * 0.5, None, *args),
        )
    scale, shift = per_channel_affine(layer, total.ndim)
    return _box(total * (scale * 0.5) + shift, width * (scale.abs() * 0.5))


def _box(mid: torch.Tensor, rad: torch.Tensor) -> Box:
    """``(mid - rad, mid + rad)``; ``mid`` becomes the upper bound in place (callers pass a fresh tensor)."""
    return mid - rad, mid.add_(rad)


def interval_bounds(layers: list[nn.Module], lower: torch.Tensor, upper: torch.Tensor) -> list[Box]:
    """The box at the input of every layer, and at the output of the last: ``len(layers) + 1`` boxes."""
    boxes = [(lower, upper)]
    for layer in layers:
        boxes.append(propagate(layer, *boxes[-1]))
    return boxes


def last_boxes(layers: list[nn.Module], lower: torch.Tensor, upper: torch.Tensor) -> list[Box]:
    """The boxes at the input and at the output of the last layer (what :func:`margin_bounds` reads), without
    keeping the others: each ReLU clamps its (fresh, no longer needed) input box in place. Not under autograd."""
    previous = current = (lower, upper)
    for layer in layers:
        previous = current
        if isinstance(layer, nn.ReLU):
            current = (current[0].clamp_min_(0), current[1].clamp_min_(0))
        else:
            current = propagate(layer, *current)
    return [previous, current]


def logit_bounds(model: nn.Module, x: torch.Tensor, eps: float, *, bounds: Bounds = Bounds()) -> Box:
    """Lower and upper bounds ``(N, K)`` of every logit over the eps box around ``x`` (for the ART cross-check)."""
    layers = chain(model.eval(), certifier="ibp", supported=IBP_LAYERS)
    with torch.no_grad():
        return interval_bounds(layers, *input_box(x, eps, bounds))[-1]


def margin_bounds(layers: list[nn.Module], boxes: list[Box], y: torch.Tensor, classes: int) -> torch.Tensor:
    """Lower bounds ``(N, K-1)`` of ``logit_label - logit_j``: through the last linear layer when there is one."""
    spec = margin_spec(y, classes).to(boxes[-1][0].dtype)
    last = layers[-1]
    if isinstance(last, nn.Linear):
        lower, upper = boxes[-2]
        mid, rad = (upper + lower) / 2, (upper - lower) / 2
        weight = spec @ last.weight  # (N, K-1, H)
        bias = spec @ last.bias if last.bias is not None else 0.0
        center = torch.einsum("nkh,nh->nk", weight, mid) + bias
        return center - torch.einsum("nkh,nh->nk", weight.abs(), rad)
    lower, upper = boxes[-1]
    return torch.einsum("nkc,nc->nk", spec.clamp_min(0), lower) + torch.einsum("nkc,nc->nk", spec.clamp_max(0), upper)


@dataclass(frozen=True, kw_only=True)
class IBP(Certifier):
    """Interval bound propagation through a chain of Linear, Conv2d, ReLU, Flatten, Normalize, BatchNorm
    (eval), MaxPool2d and AvgPool2d layers.

    Args:
        norm: "linf" (default) or "l2" (bounded through the box around the L2 ball: sound, looser).

    Cost: about two forward passes per sample and eps.
    """

    name: ClassVar[str] = "ibp"

    def check_model(self, model: nn.Module) -> None:
        chain(model, certifier=self.name, supported=IBP_LAYERS)

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, bounds: Bounds) -> CertifyResult:
        layers = chain(model, certifier=self.name, supported=IBP_LAYERS)
        boxes = last_boxes(layers, *input_box(x, eps, bounds))
        classes = boxes[-1][0].shape[1]
        # x lies in its box when it lies in the bounds: a positive margin bound then covers x itself, so the clean
        # prediction is right wherever the sample is certified, and no forward pass is needed to check it
        inside = bool(((x >= bounds.low) & (x <= bounds.high)).all())
        clean = torch.ones_like(y, dtype=torch.bool) if inside else model(x).argmax(dim=1) == y
        return result_from_margins(margin_bounds(layers, boxes, y, classes), clean)
