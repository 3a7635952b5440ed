"""One error formatter for every validated file (bench/errors.py), and the suite's independence of the gate."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench.gate.baseline import BaselineError, parse_baseline
from bench.suite import RuleError, SuiteError, parse_floor, parse_rules, validate


def test_suite_baseline_and_rules_errors_read_alike() -> None:
    with pytest.raises(SuiteError) as suite_error:
        validate({"name": "x", "models": ["mlp"], "attacks": [{"name": "fgsm", "parms": {}}], "epsilons": [0.1]})
    assert str(suite_error.value) == "<suite>: attacks[0].parms: unknown field"

    with pytest.raises(BaselineError) as baseline_error:
        parse_baseline('{"format": "bench-baseline", "version": 1, "colour": 1}', source="b.json")
    assert "b.json: colour: unknown field" in str(baseline_error.value).splitlines()

    with pytest.raises(RuleError, match=r"^s\.yaml: checks\[0\]\.floor\.metric: allowed values are 'robust_accuracy'"):
        parse_rules([{"min": 0.5, "metric": "accuracy"}], source="s.yaml")
    with pytest.raises(RuleError, match=r"^--floor 'a/b>=2': min: Input should be less than or equal to 1"):
        parse_floor("a/b>=2")


def test_model_level_errors_name_the_top_level_or_their_own_field() -> None:
    two = {"name": "x", "models": ["mlp", "mlp"], "attacks": ["fgsm"], "epsilons": [0.1]}
    with pytest.raises(SuiteError, match=r"^<suite>: \(top level\): models: 'mlp' appears twice"):
        validate(two)


def test_the_suite_imports_no_gate_and_no_mlflow() -> None:
    upper = ("bench.gate", "bench.tracking", "mlflow")
    code = f"import sys, bench.suite; print(sorted(m for m in sys.modules if m.startswith({upper!r})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
