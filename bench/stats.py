"""Metrics: robust accuracy with confidence intervals, success rate, curve AUC, minimal epsilon."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Z95 = 1.959963984540054


def wilson_interval(successes: int, n: int, *, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion (95% by default); ``(0, 1)`` when ``n == 0``."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def success_rate(clean_correct: np.ndarray, fooled: np.ndarray) -> float:
    """Fraction of clean-correct samples the attack fooled (``nan`` if none is clean-correct)."""
    base = clean_correct.astype(bool)
    if not base.any():
        return float("nan")
    return float(np.mean(fooled.astype(bool)[base]))


def cumulative_robust(pointwise: np.ndarray) -> np.ndarray:
    """Robust flags ``(E, N)`` where a sample fooled at eps_i stays fooled at every larger eps.

    ``pointwise[i, j]`` says sample j was classified correctly under the
    attack at the i-th (ascending) epsilon. An adversarial example found at a
    smaller epsilon lies inside every larger ball, so the robust flag at eps_i
    is the AND over eps_0..eps_i.
    """
    return np.logical_and.accumulate(pointwise.astype(bool), axis=0)


def minimal_eps(robust: np.ndarray, epsilons: Sequence[float]) -> np.ndarray:
    """Per sample, the smallest grid epsilon at which it is not robust (``inf`` if robust throughout).

    ``robust`` is ``(E, N)`` cumulative flags over ascending ``epsilons``.
    """
    eps = np.asarray(epsilons, dtype=float)
    fooled = ~robust.astype(bool)
    first = np.argmax(fooled, axis=0)
    out = eps[first]
    out[~fooled.any(axis=0)] = np.inf
    return out


def curve_auc(epsilons: Sequence[float], accuracies: Sequence[float]) -> float:
    """Area under the accuracy-vs-eps curve, normalized by the eps range, in [0, 1].

    Trapezoid rule over ascending eps; a single point returns its accuracy.
    """
    eps = np.asarray(epsilons, dtype=float)
    acc = np.asarray(accuracies, dtype=float)
    order = np.argsort(eps)
    eps, acc = eps[order], acc[order]
    if len(eps) == 1 or eps[-1] == eps[0]:
        return float(acc[0])
    return float(np.trapezoid(acc, eps) / (eps[-1] - eps[0]))


def mcnemar_p(losses: int, gains: int, *, two_sided: bool = False, mid_p: bool = False) -> float:
    """Exact McNemar p-value from the discordant pairs of two paired runs.

    ``losses``: samples robust in the first run and not in the second;
    ``gains``: the reverse. Under H0 ``losses ~ Binomial(losses + gains, 1/2)``.
    One-sided (default) tests "more samples lost than gained" (the regression
    gate); ``two_sided`` tests "the runs differ" (the report's comparison).
    ``mid_p`` subtracts half the probability of the observed count (less
    conservative for small counts).
    """
    from scipy import stats

    m = losses + gains
    if m == 0:
        return 1.0
    if two_sided:
        p = float(stats.binomtest(losses, m, 0.5, alternative="two-sided").pvalue)
        if mid_p:
            p -= float(stats.binom.pmf(losses, m, 0.5))
    else:
        p = float(stats.binom.sf(losses - 1, m, 0.5))
        if mid_p:
            p -= 0.5 * float(stats.binom.pmf(losses, m, 0.5))
    return min(1.0, max(0.0, p))
