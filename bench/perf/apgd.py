"""Native APGD against ART's ``AutoProjectedGradientDescent`` at the same budget (``bench perf``'s ``apgd_vs_art``).

Both attack the same inputs at one eps with the same number of iterations, one
random start, the cross-entropy loss and the same step schedule (``eps_step = 2 eps``):

* ``apgd``: native APGD without early exit (every sample, every step: ART's configuration),
  handed all inputs at once with model calls of ``batch_size`` (the runner's pooling);
* ``apgd_early_stop``: the same with the default early exit (a sample stops once fooled);
* ``art_apgd``: ART's ``AutoProjectedGradientDescent`` with ``batch_size``.

Each runs ``repeats`` times, interleaved (see :func:`~bench.perf.timing.time_interleaved`);
medians and the fastest run are kept. The robust accuracies of the last runs are compared by
the paired McNemar test (native not significantly weaker), so a fast but weak attack cannot pass.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from bench import stats
from bench.attacks.apgd import APGD, apgd_to_art
from bench.attacks.art import art_classifier
from bench.attacks.base import AttackContext
from bench.data import DataSplit
from bench.perf.config import PerfConfig
from bench.perf.timing import Bench, time_interleaved
from bench.types import Bounds

APGD_TARGET = 2.0
"""``art_apgd / apgd_early_stop`` must be at least this (the issue: at least 2x faster than ART at the same budget).

The budget is the same (steps, restarts, step schedule); the native attack runs as the harness
runs it, with early exit (ART has none). Without early exit both do every step, and ART's step costs
a forward-backward pass plus a forward pass (its loss) against our one forward-backward pass: about
1.4-1.6x on LeNet, reported as ``art_apgd / apgd``."""

ALPHA = 0.001
"""Significance level of the paired test of robust accuracy (the cross-check's)."""


def apgd_benches(
    model: nn.Module, *, eps: float, steps: int, batch_size: int, bounds: Bounds, num_classes: int, seed: int = 0
) -> dict[str, Bench]:
    """The three timed functions; each maps ``(x (N, C, H, W), y (N,))`` to adversarial inputs like ``x``."""
    from art.attacks.evasion import AutoProjectedGradientDescent  # ART: heavy optional library

    full = APGD(steps=steps, early_stop=False)
    early = APGD(steps=steps, early_stop=True)
    art_class, options = apgd_to_art(full, eps)
    assert art_class == "AutoProjectedGradientDescent"
    options["norm"] = np.inf

    def native(attack: APGD) -> Bench:
        def run(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return attack(model, x, y, eps, bounds=bounds, ctx=AttackContext(seed=seed, batch_size=batch_size))

        return run

    def art(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        classifier = art_classifier(model, input_shape=tuple(x.shape[1:]), nb_classes=num_classes, bounds=bounds)
        attack = AutoProjectedGradientDescent(classifier, eps=eps, batch_size=batch_size, verbose=False, **options)
        np.random.seed(seed)  # ART draws its random start from NumPy's global generator
        one_hot = np.eye(num_classes, dtype=np.float32)[y.numpy()]
        return torch.as_tensor(attack.generate(x.numpy().astype(np.float32), y=one_hot))

    return {"apgd": native(full), "apgd_early_stop": native(early), "art_apgd": art}


def measure_apgd_vs_art(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    bounds: Bounds,
    num_classes: int,
    eps: float = 0.1,
    steps: int = 100,
    batch_size: int = 500,
    repeats: int = 1,
    seed: int = 0,
) -> dict[str, Any]:
    """Times, speed ratios, robust accuracies and the verdict of native APGD vs ART's (a JSON-able dict).

    ``x`` ``(N, C, H, W)`` in ``bounds``, ``y`` ``(N,)``; ``eps`` in pixel units (linf).
    """
    benches = apgd_benches(
        model, eps=eps, steps=steps, batch_size=batch_size, bounds=bounds, num_classes=num_classes, seed=seed
    )
    times, samples, last = time_interleaved(benches, x, y, repeats=repeats, warmup=min(batch_size, len(x), 32))
    best = {k: min(v) for k, v in samples.items()}
    with torch.no_grad():
        clean = model(x).argmax(1) == y
        robust = {k: (clean & (model(v).argmax(1) == y)).numpy() for k, v in last.items()}
    # one-sided: is the native attack robust on significantly more samples than ART (weaker)?
    weaker = int((robust["apgd"] & ~robust["art_apgd"]).sum())
    stronger = int((~robust["apgd"] & robust["art_apgd"]).sum())
    p_weaker = stats.mcnemar_p(weaker, stronger, mid_p=False)
    ratio = times["art_apgd"] / times["apgd_early_stop"]
    return {
        "config": {"n": len(x), "eps": eps, "steps": steps, "batch_size": batch_size, "repeats": repeats},
        "times": times,
        "best_times": best,
        "ratios": {
            "art_apgd / apgd_early_stop": ratio,
            "art_apgd / apgd": times["art_apgd"] / times["apgd"],
            "best art_apgd / apgd_early_stop": best["art_apgd"] / best["apgd_early_stop"],
        },
        "robust_accuracy": {k: float(v.mean()) for k, v in robust.items()},
        "mcnemar_p_native_weaker": p_weaker,
        "target": f"art_apgd / apgd_early_stop >= {APGD_TARGET:g}",
        "passed": bool(ratio >= APGD_TARGET and p_weaker >= ALPHA),
    }


APGD_MODEL = "lenet"
"""The model ``bench perf`` measures APGD on (the issue's: LeNet on mnist5k)."""

APGD_N = 1_000
"""Inputs of the APGD comparison (the first of ``bench perf``'s inputs)."""

APGD_STEPS = 100
QUICK_APGD_STEPS = 10
"""Iterations of the comparison: the paper's 100, or 10 in ``--quick`` (the reduced CI mode)."""


def measure_apgd(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: PerfConfig, split: DataSplit
) -> dict[str, Any]:
    """``bench perf``'s ``apgd_vs_art``: :func:`measure_apgd_vs_art` on the first :data:`APGD_N` inputs."""
    n = min(len(x), APGD_N)
    return measure_apgd_vs_art(
        model,
        x[:n],
        y[:n],
        bounds=split.bounds,
        num_classes=split.num_classes,
        eps=cfg.pgd_eps,
        steps=QUICK_APGD_STEPS if cfg.harness_override else APGD_STEPS,
        batch_size=cfg.batch_size,
        repeats=1,
        seed=cfg.seed,
    )
