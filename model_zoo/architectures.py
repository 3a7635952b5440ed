"""Architectures of the seed notebooks, in pixel space with normalization inside.

Every model takes ``(N, C, H, W)`` inputs in [0, 1] and returns logits
``(N, num_classes)``. The first layer is :class:`Normalize`, so attacks work in
pixel units (DESIGN.md, convention 1). Convolutional models use "same" padding
when the input is smaller than the 28x28 the seeds were written for, so the
same architecture also runs on the 8x8 ``digits`` used by the tests; the size
of the first linear layer is computed from the input shape.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn

from bench.attacks.bpda import InputQuantization
from bench.layers import Normalize


def _flat_features(body: nn.Module, input_shape: tuple[int, int, int]) -> int:
    with torch.no_grad():
        return int(body(torch.zeros(1, *input_shape)).reshape(1, -1).shape[1])


class Classifier(nn.Sequential):
    """``Normalize -> features -> Flatten -> head``; records its input shape and class count."""

    def __init__(
        self,
        normalize: Normalize,
        features: nn.Module,
        head_sizes: Sequence[int],
        input_shape: tuple[int, int, int],
    ) -> None:
        in_features = _flat_features(features, input_shape)
        layers: list[nn.Module] = []
        sizes = [in_features, *head_sizes]
        for i, (a, b) in enumerate(itertools.pairwise(sizes)):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
        super().__init__(normalize, features, nn.Flatten(), *layers)
        self.input_shape = input_shape
        self.num_classes = head_sizes[-1]


def _normalize(
    input_shape: tuple[int, int, int], mean: Sequence[float] | None, std: Sequence[float] | None
) -> Normalize:
    c = input_shape[0]
    return Normalize(mean if mean is not None else [0.5] * c, std if std is not None else [0.5] * c)


def mlp(
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    hidden: Sequence[int] = (200,),
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Classifier:
    """Fully connected ReLU network, 784-200-10 on MNIST."""
    return Classifier(_normalize(input_shape, mean, std), nn.Identity(), [*hidden, num_classes], input_shape)


def mlp3(
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Classifier:
    """Fully connected ReLU network 784-2048-512-512-10 (the numpy assignment's perceptron)."""
    return mlp(input_shape, num_classes, hidden=(2048, 512, 512), mean=mean, std=std)


def _pad(input_shape: tuple[int, int, int], kernel: int) -> int:
    return 0 if min(input_shape[1:]) >= 28 else kernel // 2


def lenet(
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Classifier:
    """LeNet: conv(6,5)-pool-conv(16,5)-pool-fc120-fc84-fc10."""
    c, pad = input_shape[0], _pad(input_shape, 5)
    features = nn.Sequential(
        nn.Conv2d(c, 6, 5, padding=pad),
        nn.ReLU(),
        nn.MaxPool2d(2, ceil_mode=True),
        nn.Conv2d(6, 16, 5, padding=pad),
        nn.ReLU(),
        nn.MaxPool2d(2, ceil_mode=True),
    )
    return Classifier(_normalize(input_shape, mean, std), features, [120, 84, num_classes], input_shape)


def small_conv(
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Classifier:
    """Small strided conv net for certified training: conv(16,4,s2)-conv(32,4,s2)-fc100-fc10, no max-pool.

    Strided convolutions instead of pooling keep every layer affine or ReLU, which interval and CROWN bounds
    follow tightly (the "small" model of Gowal et al. 2018 and Zhang et al. 2020). No padding on 28x28 inputs
    (28 -> 13 -> 5), so ``Normalize`` folds exactly into the first convolution (ART's DeepZ, which takes only
    Conv2d, Linear and ReLU, certifies the same network: ``bench perf``).
    """
    c, pad = input_shape[0], _pad(input_shape, 4)
    features = nn.Sequential(
        nn.Conv2d(c, 16, 4, stride=2, padding=pad),
        nn.ReLU(),
        nn.Conv2d(16, 32, 4, stride=2, padding=pad),
        nn.ReLU(),
    )
    return Classifier(_normalize(input_shape, mean, std), features, [100, num_classes], input_shape)


def cnn(
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Classifier:
    """Conv stack conv32-conv32/2-conv64-conv64/2-fc100-fc10 (3x3 kernels, stride 2 where marked /2)."""
    c = input_shape[0]
    features = nn.Sequential(
        nn.Conv2d(c, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(64, 64, 3, stride=2, padding=1),
        nn.ReLU(),
    )
    return Classifier(_normalize(input_shape, mean, std), features, [100, num_classes], input_shape)


def convnet(
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    batch_norm: bool = False,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Classifier:
    """ConvNet conv32-pool-conv32-pool-fc500-fc10 (5x5 kernels, same padding), optionally with BatchNorm."""
    c = input_shape[0]

    def block(cin: int) -> list[nn.Module]:
        layers: list[nn.Module] = [nn.Conv2d(cin, 32, 5, padding=2)]
        if batch_norm:
            layers.append(nn.BatchNorm2d(32))
        layers += [nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True)]
        return layers

    features = nn.Sequential(*block(c), *block(32))
    return Classifier(_normalize(input_shape, mean, std), features, [500, num_classes], input_shape)


def convnet_bn(
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Classifier:
    """ConvNet with BatchNorm after each convolution."""
    return convnet(input_shape, num_classes, batch_norm=True, mean=mean, std=std)


def cifar_cnn(
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Classifier:
    """CIFAR-10 CNN: conv32-conv64-pool-conv64-pool (3x3) then fc256-fc10, about 1.1M parameters on 3x32x32."""
    c = input_shape[0]
    features = nn.Sequential(
        nn.Conv2d(c, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2, ceil_mode=True),
        nn.Conv2d(64, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2, ceil_mode=True),
    )
    return Classifier(_normalize(input_shape, mean, std), features, [256, num_classes], input_shape)


QUANTIZATION_LEVELS = 6
"""Grey levels of ``lenet_quantized``: 6 (0, 0.2, ..., 1), a rounding step of 0.2. Its input gradient is
exactly zero, so FGSM and PGD find nothing (the masking flags fire). A BPDA attack at eps 0.2 moves a
saturated pixel (0 or 1, most of MNIST) exactly one level, the same change plain LeNet sees at that eps, and
brings robust accuracy down to plain LeNet's (mnist5k test, PGD at eps 0.2: 0.066 vs 0.054). Fewer levels
amplify the budget (4 levels: a 0.2 perturbation becomes 1/3; BPDA-PGD 0.001), more shrink it (8 levels:
1/7; 0.25), and 2 (binarization) is a real defense at this eps (0.84)."""


class Defended(nn.Sequential):
    """``defense -> classifier``: a pixel-space defense layer in front of a :class:`Classifier`."""

    def __init__(self, defense: nn.Module, classifier: Classifier) -> None:
        super().__init__(defense, classifier)
        self.input_shape = classifier.input_shape
        self.num_classes = classifier.num_classes


def lenet_quantized(
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    levels: int = QUANTIZATION_LEVELS,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Defended:
    """LeNet behind input quantization to 6 grey levels: gradient masking (zero input gradients); break it with bpda."""
    return Defended(InputQuantization(levels), lenet(input_shape, num_classes, mean=mean, std=std))
