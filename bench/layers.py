"""Layers every part of the harness shares: the ``Normalize`` input layer of pixel-space models.

It lives below both the zoo (whose architectures start with it) and the certifiers (which bound it as a
per-channel affine map), so that certified training in the zoo can use the certifiers' bounds.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, with ``mean`` and ``std`` as buffers (saved in the state dict).

    Input ``(N, C, H, W)`` in pixel units; ``mean`` and ``std`` have ``C`` entries (``std`` > 0).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std
