"""Timing helpers of ``bench perf``: interleaved medians, peak memory, the inputs."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from bench.data import DataSplit

# -- timing ------------------------------------------------------------------------------------


Bench = Callable[[torch.Tensor, torch.Tensor], Any]


def time_interleaved(
    benches: dict[str, Bench], x: torch.Tensor, y: torch.Tensor, *, repeats: int, warmup: int
) -> tuple[dict[str, float], dict[str, list[float]], dict[str, Any]]:
    """Median seconds of each bench over ``repeats`` interleaved runs on ``(x, y)``.

    Each bench is first called on the first ``warmup`` samples (allocator,
    lazy imports, oneDNN kernel choice). Returns the medians, every sample and
    the value each bench returned on its last timed run.
    """
    for bench in benches.values():
        bench(x[:warmup], y[:warmup])
    samples: dict[str, list[float]] = {name: [] for name in benches}
    last: dict[str, Any] = {}
    for _ in range(repeats):
        for name, bench in benches.items():
            start = time.perf_counter()
            last[name] = bench(x, y)
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(s) for name, s in samples.items()}, samples, last


# -- inputs ------------------------------------------------------------------------------------


def perf_inputs(split: DataSplit, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` samples ``(n, C, H, W)`` in [0, 1] and labels ``(n,)``, repeating the split if needed."""
    reps = -(-n // len(split))
    x = split.x.repeat(reps, 1, 1, 1)[:n].contiguous()
    y = split.y.repeat(reps)[:n].contiguous()
    return x, y


def batches(x: torch.Tensor, y: torch.Tensor, size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)]
