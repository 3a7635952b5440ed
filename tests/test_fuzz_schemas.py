"""Fuzzing from the schemas (issue 31, item 7): suites, ``--set`` values and ``bench.evaluate`` arguments.

Values are drawn field by field from what the schema and the attacks' parameters take, mixed with hostile
ones (module strings naming canary modules, huge budgets, wrong types, NaN and infinities). Every example must
end in exit 0 or an ``error:`` line (exit 2), with no traceback; no canary module may ever be imported; and
``bench run`` may write nothing outside its run directory. ``bench.evaluate`` must return a table or raise
``EvaluateError``, nothing else. The default run draws a few dozen examples per test; ``pytest -m slow`` more.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import bench
from bench.api import EvaluateError
from bench.attacks import ATTACKS
from bench.cli import app
from bench.data import load_dataset
from bench.suite.schema import Suite
from model_zoo import MODELS
from tests.conftest import trained

CANARIES = ("canary_fz_a", "canary_fz_b")
CANARY = 'from pathlib import Path\nPath(__file__).with_suffix(".imported").write_text("x")\nx = 1\n'
HOSTILE_NAMES = [f"{c}:x" for c in CANARIES] + ["os:system", "this:x", "../up", "art:NoSuchAttack", "", "__x"]
FAST_ATTACKS = ["fgsm", "pgd", "bim", "uniform_noise", "salt_pepper", "gaussian_noise"]
CHEAP = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
RUNS = settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
SLOW = settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))

numbers = (
    st.integers(min_value=-3, max_value=5)
    | st.sampled_from([0, 10**9, 10**12, -(10**9), 2**63])
    | st.floats(allow_nan=True, allow_infinity=True, width=32)
)
scalars = numbers | st.booleans() | st.none() | st.sampled_from(HOSTILE_NAMES) | st.text(max_size=8)
plausible = st.integers(min_value=1, max_value=3)
"""A value an attack or recipe field may well take: drawn as often as all the hostile ones together."""


def _param_names(attack: str) -> list[str]:
    cls = ATTACKS.get(attack)
    return [f.name for f in dataclasses.fields(cls) if f.init]


@st.composite
def attack_entries(draw: st.DrawFn) -> Any:
    """A valid attack entry: a fast attack with plausible values for up to two of its parameters."""
    name = draw(st.sampled_from(FAST_ATTACKS))
    counts = COUNTS[name]
    fields = draw(st.lists(st.sampled_from(counts), max_size=2, unique=True)) if counts else []
    params = {f: draw(plausible) for f in fields}
    return {"name": name, "params": params} if params or draw(st.booleans()) else name


COUNTS = {name: [f for f in _param_names(name) if f in ("steps", "restarts", "draws")] for name in FAST_ATTACKS}
"""The amount-of-work parameters of each fast attack (fgsm has none)."""


@st.composite
def mutations(draw: st.DrawFn, suite: dict[str, Any]) -> dict[str, Any]:
    """One hostile change to a valid suite: a field of the schema, a parameter, a member, a factory, a recipe."""
    kind = draw(st.sampled_from(["top", "param", "member", "factory", "recipe", "model", "attack", "target", "eps"]))
    for key in ("models", "attacks"):  # an earlier "top" change may have made them a scalar
        if not isinstance(suite.get(key), list):
            suite[key] = []
    attacks = suite["attacks"]
    if kind == "top":
        field = draw(st.sampled_from(sorted(set(Suite.model_json_schema()["properties"]) - {"name", "tracking"})))
        suite[field] = draw(scalars | st.lists(scalars, max_size=2))
    elif kind == "param":
        name = draw(st.sampled_from([*FAST_ATTACKS, "apgd", "square"]))
        field = draw(st.sampled_from(_param_names(name)))
        attacks.append({"name": name, "label": "mutated", "params": {field: draw(scalars)}})
    elif kind == "member":
        members = draw(st.lists(st.sampled_from(["apgd", "square", *HOSTILE_NAMES]), min_size=1, max_size=2))
        extra = {"member_params": {"square": {"max_iter": draw(scalars)}}} if draw(st.booleans()) else {}
        attacks.append({"name": "reliable", "params": {"members": members, **extra}})
    elif kind == "factory":
        suite["models"].append({"name": "ext", "factory": draw(st.sampled_from(HOSTILE_NAMES)), "weights": "w.pt"})
    elif kind == "recipe":
        fields = ["optimizer", "lr", "epochs", "batch_size", "schedule", "momentum", "adv", "adv_eps", "adv_steps"]
        suite["models"].append(
            {"name": "mlp", "label": "mutated", "recipe": {draw(st.sampled_from(fields)): draw(scalars)}}
        )
    elif kind == "model":
        suite["models"].append(draw(st.sampled_from(HOSTILE_NAMES)))
    elif kind == "attack":
        attacks.append(draw(st.sampled_from(HOSTILE_NAMES)))
    elif kind == "target":
        attacks.append(
            {
                "name": "pgd",
                "label": "to",
                "params": {"targeted": True, "target_mode": "given", "steps": 2},
                "target_class": draw(st.integers(min_value=-1, max_value=60) | scalars),
            }
        )
    else:
        suite["epsilons"] = draw(st.lists(numbers | scalars, min_size=0, max_size=4))
    return suite


@st.composite
def suites(draw: st.DrawFn) -> dict[str, Any]:
    """A valid small suite, then zero to two hostile changes (so a fair share of examples runs)."""
    suite: dict[str, Any] = {
        "name": "fuzz",
        "dataset": {"name": "digits", "n": draw(st.sampled_from([8, 16]))},
        "models": draw(st.lists(st.sampled_from(["mlp", "lenet"]), min_size=1, max_size=2, unique=True)),
        "attacks": [draw(attack_entries())],
        "epsilons": draw(st.lists(st.sampled_from([0, 0.05, 0.1, "8/255"]), min_size=1, max_size=3)),
        "tracking": {"enabled": False},
    }
    for _ in range(draw(st.integers(min_value=0, max_value=2))):
        suite = draw(mutations(suite))
    return suite


@pytest.fixture
def canaries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "canaries"
    folder.mkdir()
    for name in CANARIES:
        (folder / f"{name}.py").write_text(CANARY)
    monkeypatch.syspath_prepend(str(folder))
    return folder


def _no_canary_imported(folder: Path) -> None:
    assert not list(folder.glob("*.imported")), "a module named by the input was imported"


def _cli(*argv: object) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in argv])
    output = result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in output and "unexpected" not in output and "--debug" not in output, output
    assert result.exit_code in (0, 2), output
    if result.exit_code == 2:  # after validate's own "  dataset ...: N samples found" lines, one error
        errors = [line for line in output.splitlines() if line.startswith(("error:", "Usage:"))]
        assert len(errors) == 1, output
    event(f"{argv[0]} exit {result.exit_code}")  # --hypothesis-show-statistics: how many were valid
    return result.exit_code, output


def _validate_suite(work: Path, canaries: Path, suite: dict[str, Any], *extra: str) -> None:
    path = work / "suite.yaml"
    path.write_text(yaml.safe_dump(suite, allow_unicode=True))
    _cli("validate", path, *extra)
    _no_canary_imported(canaries)


@CHEAP
@given(suite=suites())
def test_fuzz_validate_suites_from_the_schema(tmp_path: Path, canaries: Path, suite: dict[str, Any]) -> None:
    _validate_suite(tmp_path, canaries, suite)


SET_VALUES = ["fgsm", "mlp", [0, 0.1], 0.1, "adam", "8/255", ["apgd"]]
"""Values some key takes: drawn as often as the hostile ones."""
SET_KEYS = [
    "dataset.n",
    "dataset.name",
    "seed",
    "batch_size",
    "epsilons",
    "attacks.fgsm.params.norm",
    "attacks.0.name",
    "attacks.0.params.steps",
    "attacks.0.params.members",
    "models.mlp.recipe.epochs",
    "models.mlp.recipe.optimizer",
    "models.0.factory",
    "n_jobs",
    "checks",
]


@CHEAP
@given(
    key=st.sampled_from(SET_KEYS),
    value=plausible | st.sampled_from(SET_VALUES) | scalars | st.lists(scalars, max_size=3),
)
def test_fuzz_set_values(tmp_path: Path, canaries: Path, key: str, value: Any) -> None:
    base = {
        "name": "fuzz",
        "dataset": {"name": "digits", "n": 8},
        "models": ["mlp"],
        "attacks": ["fgsm"],
        "epsilons": [0, 0.1],
    }
    text = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
    _validate_suite(tmp_path, canaries, base, "--set", f"{key}={text}")


@RUNS
@given(suite=suites())
def test_fuzz_run_writes_only_its_run_directory(
    tmp_path_factory: pytest.TempPathFactory, canaries: Path, suite: dict[str, Any]
) -> None:
    work = tmp_path_factory.mktemp("fuzz-run")
    if isinstance(suite.get("models"), list):  # no recipe overrides: those would train models for minutes
        suite["models"] = [m for m in suite["models"] if not isinstance(m, dict) or "recipe" not in m] or ["mlp"]
    path = work / "suite.yaml"
    path.write_text(yaml.safe_dump(suite, allow_unicode=True))
    _cli("run", path, "--out", work / "run", "--no-mlflow", "--quiet")
    _no_canary_imported(canaries)
    assert {p.name for p in work.iterdir()} <= {"suite.yaml", "run"}


@st.composite
def evaluate_arguments(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    attack = draw(st.sampled_from([*FAST_ATTACKS, *HOSTILE_NAMES]))
    kwargs: dict[str, Any] = {}
    if attack in ATTACKS:
        for field in draw(st.lists(st.sampled_from(_param_names(attack)), max_size=2, unique=True)):
            kwargs[field] = draw(st.integers(min_value=1, max_value=3) | scalars)
    options = {
        "batch_size": st.integers(min_value=-1, max_value=8) | st.sampled_from(["5", 2.5, 10**9]),
        "epsilons": st.lists(numbers, min_size=0, max_size=4) | st.sampled_from(["0.1", 0.1, None]),
        "seed": st.integers(min_value=-5, max_value=5) | st.sampled_from([1.5, "0", 2**64]),
        "bounds": st.sampled_from([(0, 1), (1, 0), (0, float("nan")), "01", (0, 1, 2)]),
        "device": st.sampled_from(["cpu", "auto", "cuda:99", "gpu", 0]),
        "minimal_eps": st.sampled_from([False, True, "yes"]),
        "model_name": st.sampled_from(["m", "", 5]),
    }
    for field in draw(st.lists(st.sampled_from(sorted(options)), max_size=3, unique=True)):
        kwargs[field] = draw(options[field])
    return attack, kwargs


@CHEAP
@given(arguments=evaluate_arguments())
def test_fuzz_evaluate_returns_a_table_or_an_evaluate_error(
    canaries: Path, arguments: tuple[str, dict[str, Any]]
) -> None:
    attack, kwargs = arguments
    data = load_dataset("digits", "test")
    kwargs.setdefault("epsilons", [0, 0.1])
    try:
        table = bench.evaluate(trained("mlp"), data.x[:6], data.y[:6], attack, **kwargs)
    except EvaluateError as exc:
        assert str(exc) and "\n" not in str(exc)
        event("EvaluateError")
    else:
        assert isinstance(table, pd.DataFrame) and len(table) >= 1
        event("a table")
    _no_canary_imported(canaries)


@pytest.mark.slow
@SLOW
@given(suite=suites(), key=st.sampled_from(SET_KEYS), value=scalars)
def test_slow_fuzz_validate(tmp_path: Path, canaries: Path, suite: dict[str, Any], key: str, value: Any) -> None:
    _validate_suite(tmp_path, canaries, suite)
    text = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
    _validate_suite(tmp_path, canaries, suite, "--set", f"{key}={text}")


def test_the_registries_the_fuzzers_draw_from() -> None:
    assert set(FAST_ATTACKS) <= set(ATTACKS.names()) and "mlp" in MODELS


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(suite=suites())
def test_slow_fuzz_run(tmp_path_factory: pytest.TempPathFactory, canaries: Path, suite: dict[str, Any]) -> None:
    test_fuzz_run_writes_only_its_run_directory.hypothesis.inner_test(tmp_path_factory, canaries, suite)
