"""Shared value types: norms, bounds and epsilon parsing.

Epsilons are always in pixel units of the data set's declared bounds (normally
[0, 1]); a suite may write them as floats or as ``"k/255"`` strings.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated

from pydantic import BeforeValidator


class Norm(StrEnum):
    """The norm in which an attack's budget ``eps`` is measured.

    ``none`` is for unbounded synthesis (fooling images); ``l0`` budgets a
    fraction of pixels (salt and pepper); ``patch`` a patch side in pixels.
    """

    LINF = "linf"
    L2 = "l2"
    L0 = "l0"
    PATCH = "patch"
    NONE = "none"

    def __str__(self) -> str:
        return self.value


class AttackFamily(StrEnum):
    """What kind of search an attack is, as the report's sanity flags compare them.

    Declared by every attack at registration (``bench.attacks``) and written into
    the run directory's manifest, so a report reads it without importing the attacks.
    """

    ONE_STEP = "one_step"  # a single gradient step (FGSM/FGM)
    ITERATIVE = "iterative"  # projected gradient steps (BIM, PGD)
    NOISE = "noise"  # random noise of the same budget (no gradients)
    OCCLUSION = "occlusion"  # a sliding patch (no gradients)
    SYNTHESIS = "synthesis"  # unbounded ascent into a class (fooling images, targeted ascent)
    TRANSFER = "transfer"  # one perturbation learned on some samples, tried on others
    EXTERNAL = "external"  # a library's attack run through an adapter (ART)

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Bounds:
    """Closed interval ``[low, high]`` of valid pixel values."""

    low: float = 0.0
    high: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.low >= self.high:
            raise ValueError(f"bounds must be finite with low < high, got [{self.low}, {self.high}]")

    @property
    def width(self) -> float:
        return self.high - self.low

    def as_tuple(self) -> tuple[float, float]:
        return (self.low, self.high)


_FRACTION = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*/\s*([0-9]*\.?[0-9]+)\s*$")


class EpsilonError(ValueError):
    """An epsilon that is not a finite, non-negative number."""


def parse_eps(value: object) -> float:
    """Parse an epsilon written as a number or a ``"k/255"`` fraction.

    >>> parse_eps("8/255")
    0.03137254901960784
    >>> parse_eps(0.1)
    0.1

    Raises :class:`EpsilonError` for NaN, infinities, negatives, booleans and
    anything else that is not a number.
    """
    if isinstance(value, bool):
        raise EpsilonError(f"epsilon must be a number or 'k/255', got boolean {value!r}")
    if isinstance(value, int | float):
        eps = float(value)
    elif isinstance(value, str):
        match = _FRACTION.match(value)
        if match:
            num, den = float(match.group(1)), float(match.group(2))
            if den == 0:
                raise EpsilonError(f"epsilon {value!r} divides by zero")
            eps = num / den
        else:
            try:
                eps = float(value)
            except ValueError:
                raise EpsilonError(f"epsilon {value!r} is neither a number nor a fraction like '8/255'") from None
    else:
        raise EpsilonError(f"epsilon must be a number or 'k/255', got {type(value).__name__} {value!r}")
    if not math.isfinite(eps):
        raise EpsilonError(f"epsilon must be finite, got {value!r}")
    if eps < 0:
        raise EpsilonError(f"epsilon must be >= 0, got {value!r}")
    return eps


def eps_step(eps: float) -> int:
    """The MLflow step of an epsilon: ``round(eps * 1000)`` (DESIGN.md)."""
    return round(eps * 1000)


def eps_label(eps: float) -> str:
    """A short, stable text form of an epsilon for metric and file names."""
    return f"{eps:.6g}"


def _pydantic_eps(value: object) -> float:
    try:
        return parse_eps(value)
    except EpsilonError as exc:  # pydantic reports ValueErrors with the field's path
        raise ValueError(str(exc)) from None


Epsilon = Annotated[float, BeforeValidator(_pydantic_eps)]
"""An epsilon field of a pydantic model (suites, check rules): a number or ``"k/255"``."""
