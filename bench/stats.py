"""Statistics, one function each: Wilson interval, McNemar, two-proportion test, Holm, paired-difference interval.

Also the per-sample robustness bookkeeping (cumulative robust flags, the
first grid eps that fools a sample, curve AUC over the suite's grid and over a fixed
reference range per norm, :func:`reference_auc`). scipy is imported inside the
functions that need it: importing ``scipy.stats`` costs about 0.6 s, and most
callers (suite validation, the CLI's start) never test anything.

Wilson's interval keeps its closed form here: ``scipy.stats.binomtest(...).proportion_ci("wilson")``
differs in the last bits for about half of all (k, n), and results.csv stores these bounds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

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


def first_fooled_eps(robust: np.ndarray, epsilons: Sequence[float]) -> np.ndarray:
    """Per sample, the smallest *grid* epsilon at which it is not robust (``inf`` if robust throughout).

    ``robust`` is ``(E, N)`` cumulative flags over ascending ``epsilons``. (The
    bisection that searches each sample's minimal eps between grid points is
    :mod:`bench.minimal_eps`.)
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


AUC_REFERENCE_RANGE: dict[str, float] = {"linf": 0.3, "l2": 3.0, "l0": 0.1, "patch": 12.0}
"""The fixed eps range ``[0, end]`` per norm over which :func:`reference_auc` integrates (pixel units;
``l0``: fraction of pixels; ``patch``: patch side in pixels), the same in every suite."""

REFERENCE_EPS: dict[str, float] = {"linf": 0.1, "l2": 1.0, "l0": 0.05, "patch": 8.0}
"""The eps per norm at which the leaderboard reads worst-case robust accuracy."""


@dataclass(frozen=True)
class ReferenceAuc:
    """:func:`reference_auc`'s value; ``partial`` when the grid does not cover ``[0, end]``."""

    value: float
    partial: bool


def reference_auc(epsilons: Sequence[float], accuracies: Sequence[float], norm: str) -> ReferenceAuc:
    """AUC of the curve over the fixed range ``[0, AUC_REFERENCE_RANGE[norm]]``, normalized to [0, 1].

    Comparable across suites (unlike :func:`curve_auc`, which spans each suite's own
    grid). Grid points past the range end are dropped after interpolating the curve
    at the end. A grid that stops short of the end (or starts above 0) is extended
    flat from its last (first) point and the result is marked ``partial``: past
    the last grid eps the cumulative robust accuracy can only fall, so a partial
    value is an upper bound there. ``nan`` for a norm without a range (``none``).
    """
    end = AUC_REFERENCE_RANGE.get(str(norm))
    eps = np.asarray(epsilons, dtype=float)
    acc = np.asarray(accuracies, dtype=float)
    if end is None or eps.size == 0:
        return ReferenceAuc(math.nan, True)
    order = np.argsort(eps, kind="stable")
    eps, acc = eps[order], acc[order]
    partial = bool(eps[0] > 0 or eps[-1] < end)
    inside = eps <= end
    grid = np.concatenate([[0.0], eps[inside], [end]])
    values = np.concatenate([[acc[0]], acc[inside], [np.interp(end, eps, acc)]])
    return ReferenceAuc(float(np.trapezoid(values, grid) / end), partial)


# -- tests on paired and unpaired proportions --------------------------------------------------


def mcnemar_p(losses: int, gains: int, *, mid_p: bool, two_sided: bool = False) -> float:
    """Exact McNemar p-value from the discordant pairs of two paired runs.

    ``losses``: samples robust in the first run and not in the second;
    ``gains``: the reverse. Under H0 ``losses ~ Binomial(losses + gains, 1/2)``.
    One-sided (default) tests "more samples lost than gained" (the regression
    gate); ``two_sided`` tests "the runs differ" (the report's comparison, the
    cross-check). ``mid_p`` subtracts half the probability of the observed
    count (less conservative for small counts, close to nominal size); the
    gate uses it by default, the report and the cross-check do not.
    """
    from scipy import stats  # heavy (0.6 s); only callers that test pay for it

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


@dataclass(frozen=True)
class McNemar:
    """Exact two-sided McNemar test on paired flags. ``b``: robust in the first run only; ``c``: in the second only."""

    b: int
    c: int
    p_value: float


def mcnemar(first: np.ndarray, second: np.ndarray) -> McNemar:
    """Exact two-sided McNemar test of paired boolean flags ``(N,)`` (True = robust), not mid-p."""
    base = np.asarray(first, dtype=bool)
    cand = np.asarray(second, dtype=bool)
    if base.shape != cand.shape:
        raise ValueError(f"paired flags must have the same shape, got {base.shape} and {cand.shape}")
    b = int((base & ~cand).sum())
    c = int((~base & cand).sum())
    return McNemar(b, c, mcnemar_p(b, c, two_sided=True, mid_p=False))


def paired_difference_halfwidth(lost: int, gained: int, n: int, *, z: float = Z95) -> float:
    """Half-width of the normal 95% interval of a paired difference of proportions, ``(gained - lost) / n``."""
    if n == 0:
        return 0.0
    diff = (gained - lost) / n
    variance = max((lost + gained) / n - diff * diff, 0.0) / n
    return z * variance**0.5


def two_proportion_p(x_before: int, n_before: int, x_now: int, n_now: int) -> float:
    """One-sided pooled two-proportion z-test p-value for "the proportion dropped"."""
    pooled = (x_before + x_now) / (n_before + n_now)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_before + 1 / n_now))
    if se == 0:
        return 1.0
    z = (x_before / n_before - x_now / n_now) / se
    return 0.5 * math.erfc(z / math.sqrt(2))  # the normal survival function


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (family-wise error control), in the input order."""
    m = len(pvalues)
    order = np.argsort(pvalues, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted.tolist()
