"""Model factories for the hardening tests, named from suites as ``plugins:<factory>``.

pytest puts ``tests/`` on ``sys.path`` (rootdir-relative import mode), so a
suite run in the test process can write ``factory: plugins:probabilities``;
subprocesses get ``tests/`` through ``PYTHONPATH``. Every factory takes
``input_shape`` and ``num_classes`` like the zoo's architectures and returns a
small, seeded model on 8x8 digits (pixels in [0, 1]); each one misbehaves in
exactly one way.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def _linear(input_shape: tuple[int, int, int], num_classes: int) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes))


def logits(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """A well-behaved linear classifier: ``(N, C, H, W)`` -> logits ``(N, num_classes)``."""
    return _linear(input_shape, num_classes).eval()


def probabilities(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """Softmax outputs (rows in [0, 1] summing to 1) instead of logits."""
    return nn.Sequential(_linear(input_shape, num_classes), nn.Softmax(dim=1)).eval()


class _Nan(nn.Module):
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z * float("nan")


def nan_logits(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """NaN for every output (a diverged model)."""
    return nn.Sequential(_linear(input_shape, num_classes), _Nan()).eval()


def wrong_classes(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """Logits for 3 classes whatever the data set has."""
    return _linear(input_shape, 3).eval()


class _AlwaysDropout(nn.Module):
    """Dropout through the functional API with ``training=True``: eval() cannot switch it off."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return F.dropout(z, p=0.5, training=True)


def random_forward(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """A model whose forward stays random in eval mode."""
    return nn.Sequential(nn.Flatten(), _AlwaysDropout(), nn.Linear(math.prod(input_shape), num_classes)).eval()


def train_mode_bn(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """BatchNorm + Dropout, returned in *training* mode with non-trivial running statistics.

    In training mode BatchNorm normalizes with the batch's statistics and
    Dropout zeroes half the features, so outputs depend on the batch and on
    chance; in eval mode the model is a fixed function.
    """
    torch.manual_seed(0)
    c, h, w = input_shape
    model = nn.Sequential(
        nn.Conv2d(c, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Dropout(0.5),
        nn.Linear(4 * h * w, num_classes),
    )
    bn = model[1]
    assert isinstance(bn, nn.BatchNorm2d)
    bn.running_mean.fill_(0.3)
    bn.running_var.fill_(2.0)
    return model.train()
