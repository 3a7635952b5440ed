"""Fuzzing the readers of untrusted input (hypothesis): suite files, baselines, run directories.

Random bytes and random YAML/JSON structures go through the real CLI (``bench
validate``) or the very functions the CLI calls (``read_baseline``, the run
directory's readers, ``reports.sources.load_run``), and each example must end
in exit code 0/1/2 or one of the expected error types, without a traceback and
within a bounded time (hypothesis' deadline). The default run has a small budget
(a few seconds per test); ``pytest -m slow`` runs many more examples.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import bench.cli
from bench.gate.baseline import BaselineError, read_baseline
from bench.rundir import open_run_dir
from reports.sources import load_run

app = bench.cli.full_app() if hasattr(bench.cli, "full_app") else bench.cli.common
describe = sys.modules["bench.cli.common"].describe

FAST = settings(max_examples=60, deadline=3000, suppress_health_check=[HealthCheck.function_scoped_fixture])
SLOW = settings(max_examples=2000, deadline=3000, suppress_health_check=[HealthCheck.function_scoped_fixture])

SUITE: dict[str, Any] = {
    "name": "fuzz",
    "dataset": {"name": "digits", "n": 20},
    "models": ["mlp"],
    "attacks": ["fgsm"],
    "epsilons": [0, 0.1],
    "tracking": {"enabled": False},
}

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
structures = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=30,
)
field_names = st.sampled_from(
    ["name", "dataset", "models", "attacks", "epsilons", "tracking", "seed", "n_jobs", "include", "checks", "device"]
)


def _validate(path: Path) -> None:
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code in (0, 1, 2)
    assert "Traceback" not in result.stdout + result.stderr
    assert "run with --debug" not in result.stderr, result.stderr  # an unexpected exception


def _suite_bytes(tmp: Path, data: bytes) -> None:
    path = tmp / "suite.yaml"
    path.write_bytes(data)
    _validate(path)


def _suite_structure(tmp: Path, key: str, value: Any) -> None:
    path = tmp / "suite.yaml"
    path.write_text(yaml.safe_dump({**SUITE, key: value}, allow_unicode=True))
    _validate(path)


@FAST
@given(data=st.binary(max_size=400) | st.text(max_size=400).map(str.encode))
def test_suite_loader_random_bytes(tmp_path: Path, data: bytes) -> None:
    _suite_bytes(tmp_path, data)


@FAST
@given(key=field_names, value=structures)
def test_suite_loader_random_structures(tmp_path: Path, key: str, value: Any) -> None:
    _suite_structure(tmp_path, key, value)


def _baseline(tmp: Path, text: bytes) -> None:
    path = tmp / "b.json"
    path.write_bytes(text)
    try:
        read_baseline(path)
    except BaselineError as exc:
        assert str(exc).startswith(str(path))


BASELINE = {
    "format": "bench-baseline",
    "version": 1,
    "suite": "s",
    "suite_digest": "d",
    "data": {"name": "digits", "split": "test", "n": 4, "digest": "x"},
    "indices": None,
    "cells": [
        {
            "model": "m",
            "attack": "a",
            "attack_name": "fgsm",
            "attack_params": {},
            "norm": "linf",
            "targeted": False,
            "epsilons": [0.0],
            "clean_accuracy": 0.5,
            "auc": 0.5,
            "auc_sd": 0.0,
            "points": [
                {
                    "eps": 0.0,
                    "n": 4,
                    "robust": 2,
                    "robust_accuracy": 0.5,
                    "ci_low": 0,
                    "ci_high": 1,
                    "flags_digest": "0",
                }
            ],
        }
    ],
}


def _replace(doc: Any, path: list[int], value: Any) -> Any:
    """``doc`` with the node reached by walking ``path`` (indices modulo each container's size) set to ``value``."""
    if not path or not isinstance(doc, dict | list) or not doc:
        return value
    keys = list(doc) if isinstance(doc, dict) else list(range(len(doc)))
    key = keys[path[0] % len(keys)]
    out = dict(doc) if isinstance(doc, dict) else list(doc)
    out[key] = _replace(doc[key], path[1:], value)  # type: ignore[index]
    return out


@FAST
@given(data=st.binary(max_size=400))
def test_baseline_loader_random_bytes(tmp_path: Path, data: bytes) -> None:
    _baseline(tmp_path, data)


@FAST
@given(path=st.lists(st.integers(min_value=0, max_value=20), max_size=6), value=structures)
def test_baseline_loader_random_structures(tmp_path: Path, path: list[int], value: Any) -> None:
    _baseline(tmp_path, json.dumps(_replace(BASELINE, path, value)).encode())


@pytest.fixture(scope="module")
def fuzz_run(report_run: Path) -> Path:
    """A real finished run directory to corrupt (conftest's ``report_run``; each example works on a copy)."""
    return report_run


RUN_FILES = ["manifest.json", "models.json", "suite.yaml", "results.parquet", "samples.parquet", "results.csv"]


def _read_run(run: Path) -> None:
    """What report/baseline/sync read, through the same functions; only input errors (exit 2) may come out."""
    rd = open_run_dir(run)
    for reader in (
        rd.read_manifest,
        rd.read_models,
        rd.read_suite,
        rd.read_results,
        rd.read_samples,
        lambda: load_run(run),
    ):
        try:
            reader()
        except Exception as exc:
            message, code = describe(exc)
            assert code == 2 and "run with --debug" not in message, f"{type(exc).__name__}: {exc}"


def _corrupt_run(fuzz_run: Path, tmp: Path, name: str, data: bytes) -> None:
    run = tmp / "run"
    if run.exists():
        shutil.rmtree(run)
    shutil.copytree(fuzz_run, run)
    (run / name).write_bytes(data)
    _read_run(run)


@FAST
@given(name=st.sampled_from(RUN_FILES), cut=st.floats(0, 1), junk=st.binary(max_size=64))
def test_run_dir_readers_truncated_and_random(
    fuzz_run: Path, tmp_path: Path, name: str, cut: float, junk: bytes
) -> None:
    original = (fuzz_run / name).read_bytes()
    _corrupt_run(fuzz_run, tmp_path, name, original[: int(len(original) * cut)] + junk)


@FAST
@given(name=st.sampled_from(["manifest.json", "models.json"]), value=structures)
def test_run_dir_readers_random_json(fuzz_run: Path, tmp_path: Path, name: str, value: Any) -> None:
    _corrupt_run(fuzz_run, tmp_path, name, json.dumps(value).encode())


@pytest.mark.slow
@SLOW
@given(key=field_names, value=structures, data=st.binary(max_size=2000))
def test_slow_suite_and_baseline(tmp_path: Path, key: str, value: Any, data: bytes) -> None:
    _suite_structure(tmp_path, key, value)
    _suite_bytes(tmp_path, data)
    _baseline(tmp_path, data)


@pytest.mark.slow
@SLOW
@given(name=st.sampled_from(RUN_FILES), value=structures, cut=st.floats(0, 1))
def test_slow_run_dir(fuzz_run: Path, tmp_path: Path, name: str, value: Any, cut: float) -> None:
    original = (fuzz_run / name).read_bytes()
    _corrupt_run(fuzz_run, tmp_path, name, original[: int(len(original) * cut)] + json.dumps(value).encode())
