"""CROWN (Zhang et al. 2018): linear bounds propagated backward from the margins to the input.

Each ReLU whose input may take both signs is relaxed between two lines: above, the chord through
``(l, 0)`` and ``(u, u)``; below, ``alpha * z`` with CROWN's adaptive slope (1 where ``u > -l``, else 0).
A MaxPool window is bounded below by its input with the largest lower bound and above by the largest
upper bound. Backward through the chain, the margin ``logit_label - logit_j`` becomes a linear function of
the input plus a constant, minimised in closed form over the Linf box (intersected with the data bounds)
or the L2 ball. The bounds of every ReLU and MaxPool input come from CROWN itself (``intermediate:
crown``, the tightest, one backward pass per layer over all its neurons) or from interval propagation
(``intermediate: ibp``: CROWN-IBP, Zhang et al. 2020, much cheaper); both are intersected with IBP's box, and
the margins' bounds with IBP's too (neither relaxation dominates the other; both are sound).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from bench.certify.base import Certifier, CertifyResult, input_box, margin_spec, result_from_margins
from bench.certify.chain import AFFINE, AFFINE_PER_CHANNEL, CertifyError, chain, per_channel_affine
from bench.certify.ibp import Box, interval_bounds, margin_bounds
from bench.types import Bounds, Norm

CROWN_LAYERS: tuple[type[nn.Module], ...] = (*AFFINE, nn.ReLU, nn.MaxPool2d)
"""The layer types CROWN bounds (chains of them)."""
ROWS_ELEMENTS = 2**24
"""At most this many coefficients per backward pass (``rows x input size``): neurons are bounded in chunks."""
AUTO_COST = 2**20
"""``intermediate: auto`` bounds a ReLU or MaxPool input by CROWN when its backward pass costs at most this many
coefficients per sample (two rows per neuron, each as wide as every layer it passes back through), by IBP above.
On the zoo's MLP (784-200-10) the hidden layer is bounded by CROWN (1.0 M); on conv nets every layer is bounded by
IBP: on the CROWN-IBP trained ``lenet_crown`` CROWN's intermediate bounds (1.9 M and 12 M coefficients) cost
135x the time and certified the same 92 of 100 digits."""


def _affine_back(layer: nn.Module, a: torch.Tensor, in_shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A W, A . b)`` for an affine layer ``W z + b``; ``a`` is ``(N, M, *out)``, the result ``(N, M, *in)``.

    Linear, Conv2d (the gradient of a convolution with respect to its input: no forward pass), per-channel
    affine layers and Flatten in closed form; any other affine layer (AvgPool) through autograd.
    """
    n, m = a.shape[:2]
    if isinstance(layer, nn.Flatten):
        return a.reshape(n, m, *in_shape), a.new_zeros(n, m)
    if isinstance(layer, nn.Linear):
        bias = a @ layer.bias if layer.bias is not None else a.new_zeros(n, m)
        return a @ layer.weight, bias
    if isinstance(layer, nn.Conv2d):
        rows = a.reshape(n * m, *a.shape[2:])
        coef = torch.nn.grad.conv2d_input(
            (n * m, *in_shape), layer.weight, rows, layer.stride, layer.padding, layer.dilation, layer.groups
        )
        bias = (a.sum(dim=(3, 4)) @ layer.bias) if layer.bias is not None else a.new_zeros(n, m)
        return coef.view(n, m, *in_shape), bias
    if isinstance(layer, AFFINE_PER_CHANNEL):
        scale, shift = per_channel_affine(layer, a.ndim - 1)
        return a * scale.unsqueeze(1), (a * shift.unsqueeze(1)).flatten(2).sum(dim=2)
    zero = a.new_zeros((1, *in_shape))
    offset = layer(zero)  # the bias image b
    bias = (a * offset).flatten(2).sum(dim=2)
    with torch.enable_grad():
        z = a.new_zeros((n * m, *in_shape), requires_grad=True)
        out = layer(z) - offset
        (grad,) = torch.autograd.grad(out, z, grad_outputs=a.reshape(n * m, *out.shape[1:]))
    return grad.view(n, m, *in_shape), bias


def _relu_back(a: torch.Tensor, box: Box) -> tuple[torch.Tensor, torch.Tensor]:
    """Backward through a ReLU for a lower bound: positive coefficients take the lower line, negative the upper."""
    lower, upper = box
    active, inactive = lower >= 0, upper <= 0
    unstable = ~(active | inactive)
    width = (upper - lower).clamp_min(1e-12)
    up_slope = torch.where(unstable, upper / width, active.to(a.dtype))
    up_shift = torch.where(unstable, -up_slope * lower, torch.zeros_like(lower))
    low_slope = torch.where(unstable, (upper > -lower).to(a.dtype), active.to(a.dtype))
    pos, neg = a.clamp_min(0), a.clamp_max(0)
    coef = pos * low_slope.unsqueeze(1) + neg * up_slope.unsqueeze(1)
    bias = (neg * up_shift.unsqueeze(1)).flatten(2).sum(dim=2)
    return coef, bias


def _maxpool_back(layer: nn.MaxPool2d, a: torch.Tensor, box: Box) -> tuple[torch.Tensor, torch.Tensor]:
    """Backward through MaxPool: below by the window's input with the largest lower bound, above by the largest
    upper bound (a constant)."""
    lower, upper = box
    n, m = a.shape[:2]
    _, index = F.max_pool2d(
        lower, layer.kernel_size, layer.stride, layer.padding, layer.dilation, layer.ceil_mode, return_indices=True
    )
    ceiling = layer(upper)
    pos, neg = a.clamp_min(0), a.clamp_max(0)
    bias = (neg * ceiling.unsqueeze(1)).flatten(2).sum(dim=2)
    c, h, w = lower.shape[1:]
    coef = a.new_zeros(n, m, c, h * w)
    coef.scatter_add_(3, index.unsqueeze(1).expand(n, m, *index.shape[1:]).flatten(3), pos.flatten(3))
    return coef.view(n, m, c, h, w), bias


def backward_lower(
    layers: list[nn.Module],
    boxes: list[Box],
    a: torch.Tensor,
    *,
    x: torch.Tensor,
    eps: float,
    norm: Norm,
    bounds: Bounds,
) -> torch.Tensor:
    """A lower bound ``(N, M)`` of ``a . f(x')`` over the ball, ``f`` the chain ``layers``, ``a`` ``(N, M, *out)``.

    ``boxes[i]`` bounds the input of ``layers[i]`` (needed at ReLU and MaxPool layers).
    """
    bias = a.new_zeros(a.shape[:2])
    for i in range(len(layers) - 1, -1, -1):
        layer = layers[i]
        if isinstance(layer, nn.ReLU):
            a, b = _relu_back(a, boxes[i])
        elif isinstance(layer, nn.MaxPool2d):
            a, b = _maxpool_back(layer, a, boxes[i])
        else:
            a, b = _affine_back(layer, a, tuple(boxes[i][0].shape[1:]))
        bias = bias + b
    low, high = input_box(x, eps, bounds)
    flat = a.flatten(2)
    box_bound = (flat.clamp_min(0) * low.flatten(1).unsqueeze(1)).sum(2) + (
        flat.clamp_max(0) * high.flatten(1).unsqueeze(1)
    ).sum(2)
    if norm is Norm.L2:  # the ball itself, besides its box: both are sound, the larger is tighter
        ball = (flat * x.flatten(1).unsqueeze(1)).sum(2) - eps * flat.norm(dim=2)
        box_bound = torch.maximum(box_bound, ball)
    return box_bound + bias


def _neuron_bounds(
    layers: list[nn.Module], boxes: list[Box], upto: int, *, x: torch.Tensor, eps: float, norm: Norm, bounds: Bounds
) -> Box:
    """CROWN bounds of every neuron at the input of ``layers[upto]`` (the output of ``layers[:upto]``), in chunks."""
    shape = boxes[upto][0].shape[1:]
    neurons, n = math.prod(shape), len(x)
    widest = max(math.prod(box[0].shape[1:]) for box in boxes[: upto + 1])  # the largest coefficient row on the way
    chunk = max(1, ROWS_ELEMENTS // (2 * widest * n))  # two rows per neuron: its lower and its upper bound
    lower, upper = [], []
    for start in range(0, neurons, chunk):
        k = min(chunk, neurons - start)
        rows = torch.zeros(k, neurons, device=x.device, dtype=x.dtype)
        rows[torch.arange(k), torch.arange(start, start + k)] = 1.0
        a = torch.cat([rows, -rows]).view(1, -1, *shape).expand(n, -1, *shape)
        both = backward_lower(layers[:upto], boxes, a, x=x, eps=eps, norm=norm, bounds=bounds)
        lower.append(both[:, :k])
        upper.append(-both[:, k:])
    return torch.cat(lower, 1).view(n, *shape), torch.cat(upper, 1).view(n, *shape)


@dataclass(frozen=True, kw_only=True)
class Crown(Certifier):
    """CROWN: backward linear relaxation of a chain of Linear, Conv2d, ReLU, Flatten, Normalize, BatchNorm
    (eval), MaxPool2d and AvgPool2d layers; certifies where every margin's lower bound is positive.

    Args:
        norm: "linf" (default) or "l2" (the input layer is bounded on the ball itself).
        intermediate: how each ReLU/MaxPool input is bounded: "auto" (default: by CROWN where its backward pass
            costs at most 2**20 coefficients per sample, by IBP above, i.e. small fully connected networks tight
            and conv nets fast), "crown" (every one by CROWN, the tightest and on convolutions the slowest) or
            "ibp" (CROWN-IBP: one backward pass in all).

    Cost: with ``intermediate: ibp``, two forward passes and one backward pass of ``K - 1`` rows per sample
    and eps; with ``crown``, a backward pass over every neuron of every ReLU or MaxPool input as well (``auto``:
    of the inputs within its cost).
    """

    name: ClassVar[str] = "crown"

    intermediate: Literal["auto", "crown", "ibp"] = "auto"

    def check_params(self) -> None:
        if self.intermediate not in ("auto", "crown", "ibp"):
            raise CertifyError(f"crown: intermediate {self.intermediate!r} is not allowed (allowed: auto, crown, ibp)")

    def check_model(self, model: nn.Module) -> None:
        chain(model, certifier=self.name, supported=CROWN_LAYERS)

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, bounds: Bounds) -> CertifyResult:
        layers = chain(model, certifier=self.name, supported=CROWN_LAYERS)
        boxes = interval_bounds(layers, *input_box(x, eps, bounds))
        if self.intermediate != "ibp":
            for i, layer in enumerate(layers):
                width = sum(math.prod(box[0].shape[1:]) for box in boxes[: i + 1])
                wide = 2 * math.prod(boxes[i][0].shape[1:]) * width > AUTO_COST
                if isinstance(layer, nn.ReLU | nn.MaxPool2d) and not (self.intermediate == "auto" and wide):
                    low, high = _neuron_bounds(layers, boxes, i, x=x, eps=eps, norm=self.norm, bounds=bounds)
                    boxes[i] = (torch.maximum(boxes[i][0], low), torch.minimum(boxes[i][1], high))
        logits = model(x)
        spec = margin_spec(y, logits.shape[1]).to(x.dtype)
        margins = backward_lower(layers, boxes, spec, x=x, eps=eps, norm=self.norm, bounds=bounds)
        # neither relaxation dominates the other in general: both margins are sound, so the larger is kept and
        # CROWN is never looser than IBP (the same intersection as for the intermediate boxes)
        margins = torch.maximum(margins, margin_bounds(layers, boxes, y, logits.shape[1]))
        return result_from_margins(margins, logits.argmax(dim=1) == y)
