from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.types import Bounds, EpsilonError, eps_step, parse_eps


def test_fractions_and_numbers() -> None:
    assert parse_eps("8/255") == pytest.approx(8 / 255)
    assert parse_eps(" 2 / 255 ") == pytest.approx(2 / 255)
    assert parse_eps("0.1") == 0.1
    assert parse_eps(0) == 0.0
    assert parse_eps(1) == 1.0


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-0.1, ">= 0"),
        (float("nan"), "finite"),
        (float("inf"), "finite"),
        ("nan", "finite"),
        ("1/0", "divides by zero"),
        ("eight/255", "neither a number nor a fraction"),
        (True, "boolean"),
        (None, "must be a number"),
        ([0.1], "must be a number"),
    ],
)
def test_bad_epsilons(value: object, message: str) -> None:
    with pytest.raises(EpsilonError, match=message):
        parse_eps(value)


@given(st.integers(min_value=0, max_value=10_000), st.integers(min_value=1, max_value=10_000))
def test_fraction_property(k: int, d: int) -> None:
    assert parse_eps(f"{k}/{d}") == pytest.approx(k / d)


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_float_property(x: float) -> None:
    if math.isfinite(x) and x >= 0:
        assert parse_eps(x) == x
        assert parse_eps(repr(x)) == pytest.approx(x)
    else:
        with pytest.raises(EpsilonError):
            parse_eps(x)


def test_eps_step_and_bounds() -> None:
    assert [eps_step(e) for e in (0, 0.05, 0.1, 0.3)] == [0, 50, 100, 300]
    assert Bounds().as_tuple() == (0.0, 1.0)
    with pytest.raises(ValueError, match="low < high"):
        Bounds(1.0, 0.0)
