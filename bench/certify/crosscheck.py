"""The certifiers beside ART's (``bench crosscheck --certifiers``, tests/test_certify.py).

ART's certifiers convert only networks of Conv2d, Linear and ReLU layers held as attributes (no Normalize,
no MaxPool), so the comparison runs on such a network trained briefly on the given data (seeded), the
same for both sides:

* ``ibp``: logit bounds against ``PyTorchIBPClassifier.predict_intervals``: equal to 1e-5 of the
  interval's magnitude (float32 sums in another order);
* ``crown``: certified samples against ``PytorchDeepZ.certify`` (zonotopes, no clipping to the data bounds,
  so neither side clips): CROWN must certify every sample DeepZ certifies;
* ``smoothing``: ``PyTorchRandomizedSmoothing.certify`` with the same sigma, n0, n and alpha: the same class
  for at least 99% of the samples neither abstains on, radii within Monte Carlo noise (mean gap <= 0.05,
  largest <= 0.25 pixel units at n = 500).
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from bench.certify.chain import CertifyError, chain
from bench.certify.ibp import logit_bounds
from bench.certify.registry import make_certifier
from bench.data import DataSplit
from bench.layers import Normalize
from bench.types import Bounds

WIDE = Bounds(-1e6, 1e6)
"""No clipping to the data bounds: ART's zonotopes see the whole ball."""
SMOOTHING = {"sigma": 0.25, "n0": 100, "n": 500, "alpha": 0.001}


class ArtNet(nn.Module):
    """Conv2d(8, 3) - ReLU - Conv2d(8, 3, stride 2) - ReLU - Linear(32) - ReLU - Linear(classes), in the form ART
    converts (layers as attributes, the reshape between convolutions and dense layers inferred)."""

    def __init__(self, input_shape: tuple[int, int, int], classes: int) -> None:
        super().__init__()
        c, h, w = input_shape
        self.conv1, self.conv2 = nn.Conv2d(c, 8, 3), nn.Conv2d(8, 8, 3, stride=2)
        flat = 8 * ((h - 2 - 3) // 2 + 1) * ((w - 2 - 3) // 2 + 1)
        self.fc1, self.fc2 = nn.Linear(flat, 32), nn.Linear(32, classes)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.conv2(self.relu(self.conv1(x))))
        return self.fc2(self.relu(self.fc1(x.flatten(1))))

    def chain(self) -> nn.Sequential:
        """The same network as a chain of copies of its layers, for the native certifiers.

        Copies without hooks: ART's converters register forward hooks on the layers they are given (to record
        shapes; they return nothing), and the certifiers refuse a hooked layer, whose output a hook may change.
        """
        layers = [copy.deepcopy(m) for m in (self.conv1, self.conv2, self.fc1, self.fc2)]
        for layer in layers:
            layer._forward_hooks.clear()
            layer._forward_pre_hooks.clear()
        conv1, conv2, fc1, fc2 = layers
        return nn.Sequential(conv1, nn.ReLU(), conv2, nn.ReLU(), nn.Flatten(), fc1, nn.ReLU(), fc2).eval()


class ArtForm(nn.Module):
    """A certifiable chain of Normalize, Conv2d, Linear, ReLU and Flatten layers in the form ART's DeepZ converts:
    copies of its Conv2d, Linear and ReLU layers as children in call order, ``Normalize`` folded exactly into the
    next Conv2d (without padding) or Linear, the reshape before the first Linear done in ``forward``.

    The same function as the chain (to float rounding), so DeepZ and the native certifiers bound one network.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        supported = (Normalize, nn.Conv2d, nn.Linear, nn.ReLU, nn.Flatten)
        pending: Normalize | None = None
        count = 0
        for layer in chain(model, certifier="ART DeepZ", supported=supported):
            if isinstance(layer, Normalize):
                pending = layer
                continue
            if isinstance(layer, nn.Flatten):
                continue
            layer = copy.deepcopy(layer)
            layer._forward_hooks.clear()
            layer._forward_pre_hooks.clear()
            if pending is not None:
                _fold(pending, layer)
                pending = None
            self.add_module(f"layer{count}", layer)
            count += 1
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.children():
            if isinstance(layer, nn.Linear) and x.ndim > 2:
                x = x.flatten(1)
            x = layer(x)
        return x


@torch.no_grad()
def _fold(normalize: Normalize, layer: nn.Module) -> None:
    """``layer((x - mean) / std)`` as ``layer'(x)``: divide the weights by std, move the mean into the bias."""
    if isinstance(layer, nn.Conv2d):
        if any(p != 0 for p in layer.padding) if isinstance(layer.padding, tuple) else layer.padding != 0:
            raise CertifyError("ART DeepZ: Normalize before a padded Conv2d cannot be folded exactly")
        scale, shift = 1.0 / normalize.std.view(1, -1, 1, 1), (normalize.mean / normalize.std).view(1, -1, 1, 1)
        bias = layer.bias if layer.bias is not None else torch.zeros(layer.out_channels)
        layer.bias = nn.Parameter(bias - (layer.weight * shift).sum(dim=(1, 2, 3)))
        layer.weight.mul_(scale)
    elif isinstance(layer, nn.Linear):
        per_input = layer.in_features // normalize.std.numel()
        scale = (1.0 / normalize.std.flatten()).repeat_interleave(per_input)
        shift = (normalize.mean / normalize.std).flatten().repeat_interleave(per_input)
        bias = layer.bias if layer.bias is not None else torch.zeros(layer.out_features)
        layer.bias = nn.Parameter(bias - layer.weight @ shift)
        layer.weight.mul_(scale)
    else:
        raise CertifyError(f"ART DeepZ: Normalize before {type(layer).__name__} cannot be folded")


def deepz_certified(net: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, classes: int) -> torch.Tensor:
    """``(N,)`` bool: the samples ART's ``PytorchDeepZ`` certifies at Linf ``eps`` (the whole ball, no clipping),
    one ``certify`` call per sample as ART's API takes them; ``net`` in ART's form (:class:`ArtNet`,
    :class:`ArtForm`)."""
    from art.estimators.certification.deep_z import PytorchDeepZ  # heavy optional: ART (5.8 s)

    shape = tuple(x.shape[1:])
    with warnings.catch_warnings():  # ART says it infers the reshape between convolutions and dense layers: it does
        warnings.filterwarnings("ignore", message=".*does not support networks which have dense layers.*")
        deepz = PytorchDeepZ(
            model=net, loss=nn.CrossEntropyLoss(), input_shape=shape, nb_classes=classes, device_type="cpu"
        )
    size = int(np.prod(shape))
    error_terms = np.eye(size, dtype=np.float32).reshape(size, *shape) * eps
    with torch.no_grad():
        predictions = net(x).argmax(dim=1).tolist()
    out = []
    for xi, yi, prediction in zip(x.numpy(), y.tolist(), predictions, strict=True):
        out.append(
            prediction == yi and bool(deepz.certify(cent=xi[None].copy(), eps=error_terms, prediction=prediction))
        )
    return torch.tensor(out, dtype=torch.bool)


def train_art_net(train: DataSplit, *, seed: int = 0, steps: int = 150) -> ArtNet:
    """An :class:`ArtNet` fitted with Adam on ``train`` (full batch, ``steps`` steps): certifiable samples exist."""
    torch.manual_seed(seed)
    net = ArtNet(train.input_shape, train.num_classes)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.cross_entropy(net(train.x), train.y).backward()
        optimizer.step()
    return net.eval()


@dataclass(frozen=True)
class CertifierComparison:
    """One comparison: what was measured against which bound, and whether it holds."""

    certifier: str
    art: str
    eps: float
    n: int
    measure: str
    value: float
    bound: float
    passed: bool

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _art_estimator(net: ArtNet, data: DataSplit) -> dict[str, Any]:
    """The arguments every ART certifier takes: the network, its loss and shapes, on the CPU."""
    return {
        "model": net,
        "loss": nn.CrossEntropyLoss(),
        "input_shape": data.input_shape,
        "nb_classes": data.num_classes,
        "device_type": "cpu",
    }


def compare_ibp(net: ArtNet, data: DataSplit, eps: float) -> CertifierComparison:
    from art.estimators.certification.interval import PyTorchIBPClassifier  # heavy optional: ART (5.8 s)

    art = PyTorchIBPClassifier(**_art_estimator(net, data), clip_values=data.bounds.as_tuple())
    bounds = list(data.bounds.as_tuple())
    theirs = art.predict_intervals(data.x.numpy(), is_interval=False, bounds=eps, limits=bounds)
    lower, upper = logit_bounds(net.chain(), data.x, eps, bounds=data.bounds)
    scale = np.maximum(1.0, np.abs(theirs).max(axis=1))
    gap = max(
        float((np.abs(theirs[:, 0] - lower.numpy()) / scale).max()),
        float((np.abs(theirs[:, 1] - upper.numpy()) / scale).max()),
    )
    return CertifierComparison(
        "ibp", "PyTorchIBPClassifier", eps, len(data), "largest logit-bound gap / magnitude", gap, 1e-5, gap <= 1e-5
    )


def compare_crown(net: ArtNet, data: DataSplit, eps: float) -> tuple[CertifierComparison, int, int]:
    """The comparison, then how many samples DeepZ and CROWN certified."""
    ours = make_certifier("crown").certify(net.chain(), data.x, data.y, eps, bounds=WIDE).certified
    theirs_t = deepz_certified(net, data.x, data.y, eps, data.num_classes)
    missed, deepz_count, crown_count = int((theirs_t & ~ours).sum()), int(theirs_t.sum()), int(ours.sum())
    measure = f"samples DeepZ certifies and CROWN does not (certified: DeepZ {deepz_count}, CROWN {crown_count})"
    comparison = CertifierComparison("crown", "PytorchDeepZ", eps, len(data), measure, missed, 0, missed == 0)
    return comparison, deepz_count, crown_count


def compare_smoothing(net: ArtNet, data: DataSplit, *, seed: int = 0) -> list[CertifierComparison]:
    from art.estimators.certification.randomized_smoothing import PyTorchRandomizedSmoothing  # heavy optional: ART

    prediction, radius = make_certifier("smoothing", seed=seed, **SMOOTHING).radii(net, data.x)
    np.random.seed(seed)  # ART draws its noise from NumPy's global generator
    art = PyTorchRandomizedSmoothing(
        **_art_estimator(net, data),
        clip_values=data.bounds.as_tuple(),
        sample_size=SMOOTHING["n0"],
        scale=SMOOTHING["sigma"],
        alpha=SMOOTHING["alpha"],
    )
    art_prediction, art_radius = art.certify(data.x.numpy(), n=int(SMOOTHING["n"]), batch_size=500)
    both = (prediction >= 0) & torch.as_tensor(art_prediction >= 0)
    agree = float((prediction[both] == torch.as_tensor(art_prediction)[both]).float().mean()) if both.any() else 1.0
    gap = (radius[both] - torch.as_tensor(art_radius, dtype=torch.float32)[both]).abs()
    mean_gap = float(gap.mean()) if both.any() else 0.0
    largest = float(gap.max()) if both.any() else 0.0
    name, n = "PyTorchRandomizedSmoothing", len(data)
    return [
        CertifierComparison(
            "smoothing", name, float("nan"), n, "same class (both certify)", agree, 0.99, agree >= 0.99
        ),
        CertifierComparison("smoothing", name, float("nan"), n, "mean radius gap", mean_gap, 0.05, mean_gap <= 0.05),
        CertifierComparison("smoothing", name, float("nan"), n, "largest radius gap", largest, 0.25, largest <= 0.25),
    ]


def certifier_crosscheck(
    train: DataSplit, test: DataSplit, *, epsilons: tuple[float, ...] = (0.01, 0.02), seed: int = 0
) -> list[CertifierComparison]:
    """Every comparison of the module docstring on ``test`` (its first samples), the network fitted on ``train``."""
    net = train_art_net(train, seed=seed)
    with warnings.catch_warnings():  # ART says it infers the reshape between convolutions and dense layers: it does
        warnings.filterwarnings("ignore", message=".*does not support networks which have dense layers.*")
        rows = [compare_ibp(net, test, eps) for eps in epsilons]
        rows += [compare_crown(net, test, eps)[0] for eps in epsilons]
        rows += compare_smoothing(net, test, seed=seed)
    return rows
