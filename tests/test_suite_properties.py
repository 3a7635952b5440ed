"""Property-based tests (hypothesis) of the suite parser and of epsilon parsing.

* generated valid suites validate, and round-trip through ``resolved()`` ->
  ``dump_yaml`` -> file -> ``load_suite`` to the same suite and digest;
* arbitrary mappings, and valid suites with one field replaced by junk, either
  validate or raise :class:`SuiteError`, never another exception type;
* epsilons written as floats or ``"k/255"`` parse to the same pixel values in a
  suite as through :func:`parse_eps`, and any text either parses to a finite,
  non-negative float or raises :class:`EpsilonError`.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.rundir import cell_folder
from bench.suite import SuiteError, dump_yaml, expand, load_suite, validate
from bench.types import EpsilonError, parse_eps

settings.register_profile("suite", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SUITE_SETTINGS = settings.get_profile("suite")

names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,15}", fullmatch=True).filter(
    lambda s: ".." not in s and "__" not in s  # "__" separates model and attack in cell ids: refused
)
fractions = st.integers(min_value=0, max_value=255).map(lambda k: f"{k}/255")
linf_eps = st.one_of(st.floats(min_value=0, max_value=1, allow_nan=False), fractions)
l2_eps = st.floats(min_value=0, max_value=4, allow_nan=False)


@st.composite
def attacks(draw: st.DrawFn) -> list[dict[str, Any]]:
    count = draw(st.integers(min_value=1, max_value=3))
    # distinct as cell folders too: case-insensitively and after escaping (the suite refuses others)
    labels = draw(
        st.lists(names, min_size=count, max_size=count, unique_by=lambda s: cell_folder(f"m__{s}").casefold())
    )
    out = []
    for label in labels:
        norm = draw(st.sampled_from(["linf", "l2"]))
        entry: dict[str, Any] = {"name": "fgsm", "label": label, "params": {"norm": norm}}
        if draw(st.booleans()):
            entry["params"]["targeted"] = draw(st.booleans())
        if norm == "l2":
            entry["epsilons"] = draw(st.lists(l2_eps, min_size=1, max_size=4))
        out.append(entry)
    return out


@st.composite
def valid_suites(draw: st.DrawFn) -> dict[str, Any]:
    models = draw(st.lists(st.sampled_from(["mlp", "lenet", "cnn", "mlp3"]), min_size=1, max_size=3, unique=True))
    dataset: dict[str, Any] = {"name": draw(st.sampled_from(["digits", "mnist5k"]))}
    if draw(st.booleans()):
        dataset["n"] = draw(st.integers(min_value=1, max_value=10_000))
    if draw(st.booleans()):
        dataset["split"] = draw(st.sampled_from(["train", "test"]))
    suite: dict[str, Any] = {
        "name": draw(names),
        "seed": draw(st.integers(min_value=-(2**31), max_value=2**31)),
        "dataset": dataset,
        "models": models,
        "attacks": draw(attacks()),
        "epsilons": draw(st.lists(linf_eps, min_size=1, max_size=6)),
        "batch_size": draw(st.integers(min_value=1, max_value=4096)),
        "tracking": {"enabled": draw(st.booleans()), "examples": draw(st.integers(min_value=0, max_value=64))},
    }
    if draw(st.booleans()):
        suite["description"] = draw(st.text(max_size=40))
    return suite


@SUITE_SETTINGS
@given(valid_suites())
def test_valid_suites_validate_and_round_trip(raw: dict[str, Any]) -> None:
    suite = validate(raw)
    assert suite.epsilons == sorted(set(suite.epsilons)) and all(0 <= e <= 1 for e in suite.epsilons)
    assert suite.epsilons == sorted({parse_eps(e) for e in raw["epsilons"]})
    assert len(expand(suite)) == len(raw["models"]) * len(raw["attacks"])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "resolved.yaml"
        path.write_text(dump_yaml(suite.resolved()), encoding="utf-8")
        again = load_suite(path)
    assert again.resolved() == suite.resolved()
    assert again.digest == suite.digest
    assert again == suite


junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
FIELDS = [
    "name", "description", "seed", "device", "dataset", "models", "attacks", "epsilons", "batch_size",
    "n_jobs", "backend", "scheduler", "tracking", "allow_probabilities", "crosscheck", "checks",
]  # fmt: skip


@SUITE_SETTINGS
@given(st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), junk, max_size=8))
def test_arbitrary_mappings_raise_only_suite_errors(raw: dict[str, Any]) -> None:
    try:
        validate(raw)
    except SuiteError as exc:
        assert str(exc).startswith("<suite>: ")


_SUBFIELDS: dict[str, list[str]] = {
    "dataset": ["name", "split", "n", "offset", "options"],
    "models": ["name", "label", "recipe", "factory", "weights", "params", "weights_layout"],
    "attacks": ["name", "label", "params", "epsilons", "minimal_eps", "target_class", "n"],
}
hostile_strings = st.sampled_from(
    ["", "\x00", "../x", "/etc/passwd", "nan", "-1", "1e400", "8/0", "os:system", "a:b:c", "x.npz", "w\x00.pt"]
)


@SUITE_SETTINGS
@given(valid_suites(), st.data())
def test_one_junk_field_gives_a_suite_error_naming_the_field(raw: dict[str, Any], data: st.DataObject) -> None:
    """Replace one field (or one field of the first model / attack / the data set) with junk."""
    key = data.draw(st.sampled_from(FIELDS))
    value = data.draw(junk | hostile_strings)
    where = key
    if key in _SUBFIELDS and data.draw(st.booleans()):
        sub = data.draw(st.sampled_from(_SUBFIELDS[key]))
        if key == "dataset":
            raw[key] = {**raw[key], sub: value}
        else:
            first = raw[key][0]
            raw[key] = [{**({"name": first} if isinstance(first, str) else first), sub: value}, *raw[key][1:]]
        where = f"{key}[0]" if key != "dataset" else key
    else:
        raw[key] = value
    try:
        validate(raw, source="junk.yaml")
    except SuiteError as exc:
        text = str(exc)
        assert text.startswith("junk.yaml: ")
        assert any(where in line or "(top level)" in line for line in text.splitlines()), text


@given(st.text(max_size=20))
def test_any_text_parses_to_a_valid_eps_or_raises_epsilon_error(text: str) -> None:
    try:
        eps = parse_eps(text)
    except EpsilonError:
        return
    assert math.isfinite(eps) and eps >= 0


@given(
    st.integers(min_value=0, max_value=255),
    st.sampled_from(["", " ", "  "]),
    st.sampled_from(["", " "]),
)
def test_k_over_255_in_a_suite_is_pixel_units(k: int, pad_left: str, pad_mid: str) -> None:
    written = f"{pad_left}{k}{pad_mid}/{pad_mid}255{pad_left}"
    suite = validate({"name": "p", "models": ["mlp"], "attacks": ["fgsm"], "epsilons": [written, k / 255]})
    assert suite.epsilons == [pytest.approx(k / 255)] or suite.epsilons == pytest.approx([k / 255, k / 255])
    assert parse_eps(written) == pytest.approx(k / 255)


@given(st.floats(min_value=1.0, max_value=1e6, exclude_min=True, allow_nan=False, allow_infinity=False))
def test_linf_eps_above_the_pixel_range_is_refused(eps: float) -> None:
    with pytest.raises(SuiteError, match=r"epsilons: .* out of bounds for norm linf \(allowed: 0 <= eps <= 1"):
        validate({"name": "p", "models": ["mlp"], "attacks": ["fgsm"], "epsilons": [0, eps]})


@given(st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False))
def test_l2_eps_is_not_limited_by_the_pixel_width_at_validation(eps: float) -> None:
    """The L2 bound needs the input shape (checked when the data is loaded), so any finite eps validates here."""
    suite = validate(
        {"name": "p", "models": ["mlp"], "attacks": [{"name": "fgsm", "params": {"norm": "l2"}}], "epsilons": [eps]}
    )
    assert suite.epsilons == [eps]


def test_bound_check_uses_the_shape_at_run_time() -> None:
    from bench.suite import eps_bound_problems

    assert list(eps_bound_problems("l2", [0, 28.0], input_shape=(1, 28, 28))) == []
    (problem,) = eps_bound_problems("l2", [28.5], input_shape=(1, 28, 28))
    assert "28.5 out of bounds for norm l2 (allowed: 0 <= eps <= 28" in problem
    assert list(eps_bound_problems("none", [1e9])) == []
