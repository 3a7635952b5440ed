"""Baseline files: built from a real run, round-tripped, validated, and served through a real MLflow server."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from bench.cli import app
from bench.engine import run_suite
from bench.gate.baseline import (
    BaselineError,
    baseline_from_run,
    decode_flags,
    decode_indices,
    encode_flags,
    encode_indices,
    flags_digest,
    read_baseline,
    write_baseline,
)
from bench.rundir import RunDir
from bench.stats import curve_auc
from bench.suite import validate


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> RunDir:
    raw = {
        "name": "baseline-test",
        "device": "cpu",
        "dataset": {"name": "mnist5k", "split": "test", "n": 300},
        "models": ["mlp"],
        "attacks": [{"name": "fgsm", "params": {"norm": "linf"}}],
        "epsilons": [0, 0.05, 0.1],
        "tracking": {"enabled": False},
    }
    return run_suite(validate(raw), out=tmp_path_factory.mktemp("baseline-run"), track=False, echo=None).run_dir


@pytest.fixture
def baseline_json(run: RunDir, tmp_path: Path) -> dict[str, Any]:
    path = tmp_path / "b.json"
    write_baseline(baseline_from_run(run), path)
    return dict(json.loads(path.read_text()))


def test_baseline_holds_the_runs_numbers_and_flags(run: RunDir, tmp_path: Path) -> None:
    baseline = baseline_from_run(run)
    write_baseline(baseline, tmp_path / "b.json")
    again = read_baseline(tmp_path / "b.json")
    assert again == baseline
    # version 2: the weights of each model (a run that did not record them: unknown) and per cell reproducible
    assert again.version == 2 and again.models["mlp"].weights in ("reference", "retrained", "external", "unknown")
    assert again.cells[0].reproducible == bool(run.read_manifest()["attacks"]["fgsm"].get("reproducible", False))
    results, samples = run.read_results(), run.read_samples()
    cell = again.cells[0]
    assert (cell.model, cell.attack, cell.epsilons) == ("mlp", "fgsm", [0.0, 0.05, 0.1])
    assert again.data.n == 300 and again.data.digest == run.read_manifest()["data"]["digest"]
    assert np.array_equal(again.sample_indices(), np.sort(samples["index"].unique()))
    flags = again.flag_matrix(cell)
    assert flags is not None and flags.shape == (3, 300)
    for i, point in enumerate(cell.points):
        expected = samples[samples["eps"] == point.eps].sort_values("index")["correct"].to_numpy(dtype=bool)
        assert np.array_equal(flags[i], expected)
        row = results[results["eps"] == point.eps].iloc[0]
        assert point.robust_accuracy == pytest.approx(row["robust_accuracy"])
        assert (point.ci_low, point.ci_high) == pytest.approx((row["ci_low"], row["ci_high"]))
    assert cell.auc == pytest.approx(curve_auc(results["eps"], results["robust_accuracy"]))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=300), st.integers(0, 10_000))
def test_flag_and_index_encodings_round_trip(flags: list[bool], start: int) -> None:
    arr = np.array(flags)
    idx = np.arange(start, start + 3 * len(flags), 3)
    assert np.array_equal(decode_flags(encode_flags(arr), len(arr)), arr)
    assert np.array_equal(decode_indices(encode_indices(idx)), idx)
    flipped = arr.copy()
    flipped[0] = not flipped[0]
    assert flags_digest(idx, flipped) != flags_digest(idx, arr)


def _write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "bad.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_tampered_flags_are_refused(baseline_json: dict[str, Any], tmp_path: Path) -> None:
    point = baseline_json["cells"][0]["points"][1]
    raw = bytearray(base64.b64decode(point["flags"]))
    raw[0] ^= 0b1000_0000  # flip the first sample's flag
    point["flags"] = base64.b64encode(bytes(raw)).decode()
    path = _write(tmp_path, baseline_json)
    with pytest.raises(BaselineError, match=r"bad.json: cells\[0\]\.points\[1\]\.flags: \d+ robust flags, but robust"):
        read_baseline(path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda b: b.update(version=3), r"version: baseline format version 3 is not supported \(allowed: 1, 2\)"),
        (lambda b: b.update(version=True), r"version: baseline format version True is not supported"),
        (
            lambda b: b["models"].update(mlp={"sha256": "0" * 65, "weights": "reference"}),
            r"models\.mlp\.sha256: String",
        ),
        (
            lambda b: b["cells"][0].update(reproducible="yes"),
            r"cells\[0\]\.reproducible: expected a boolean \(true or false\), got str 'yes'",
        ),
        (lambda b: b.update(format="other"), r'format: not a bench baseline \(expected "format": "bench-baseline"'),
        (lambda b: b["cells"][0].update(colour="red"), r"cells\[0\]\.colour: unknown field"),
        (lambda b: b["cells"][0].pop("epsilons"), r"cells\[0\]\.epsilons: Field required"),
        (
            lambda b: b["cells"][0]["points"][0].update(robust_accuracy=0.5),
            r"cells\[0\]\.points\[0\]: robust_accuracy 0.5 is not robust / n",
        ),
        (lambda b: b["cells"][0]["points"][2].update(eps=0.2), r"cells\[0\]: points' eps .* do not match epsilons"),
        (lambda b: b["cells"][0]["points"][0].update(flags_digest="0" * 16), r"flags_digest: does not match the flags"),
        (lambda b: b.update(indices="@@@"), r"indices: not base64"),
    ],
)
def test_malformed_baselines_name_the_field(
    run: RunDir, baseline_json: dict[str, Any], tmp_path: Path, edit: Any, message: str
) -> None:
    edit(baseline_json)
    path = _write(tmp_path, baseline_json)
    with pytest.raises(BaselineError, match=message):
        read_baseline(path)
    result = CliRunner().invoke(app, ["check", str(run.root), "--baseline", str(path)])
    assert result.exit_code == 2 and str(path) in result.stderr


def test_baseline_command(run: RunDir, tmp_path: Path) -> None:
    out = tmp_path / "b.json"
    result = CliRunner().invoke(app, ["baseline", str(run.root), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert read_baseline(out).suite == "baseline-test"
    slim = CliRunner().invoke(app, ["baseline", str(run.root), "-o", str(tmp_path / "s.json"), "--no-flags"])
    assert slim.exit_code == 0 and read_baseline(tmp_path / "s.json").cells[0].points[0].flags is None
    nowhere = CliRunner().invoke(app, ["baseline", str(run.root)])
    assert nowhere.exit_code == 2 and "-o FILE, --mlflow or --mlflow-alias" in nowhere.stderr
    not_a_run = CliRunner().invoke(app, ["baseline", str(tmp_path), "-o", str(out)])
    assert not_a_run.exit_code == 2 and "not a run directory" in not_a_run.stderr


@pytest.mark.mlflow_server
def test_mlflow_baseline_by_run_id_and_alias(run: RunDir, mlflow_uri: str) -> None:
    runner = CliRunner()
    published = runner.invoke(app, ["baseline", str(run.root), "--mlflow-alias", "main"])
    assert published.exit_code == 0, published.output
    run_id = published.stdout.split("MLflow run ")[1].split(",")[0].strip()

    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_uri)
    assert client.get_experiment_by_name("baseline-test").tags["bench.baseline.main"] == run_id
    assert "bench_baseline/baseline.json" in [a.path for a in client.list_artifacts(run_id, "bench_baseline")]

    by_alias = runner.invoke(app, ["check", str(run.root), "--baseline-alias", "main"])
    assert by_alias.exit_code == 0, by_alias.output
    assert f"MLflow alias 'main' (run {run_id})" in by_alias.stdout and "McNemar" in by_alias.stdout
    by_id = runner.invoke(app, ["check", str(run.root), "--baseline-run", run_id])
    assert by_id.exit_code == 0, by_id.output

    unknown = runner.invoke(app, ["check", str(run.root), "--baseline-alias", "release"])
    assert unknown.exit_code == 2 and "no baseline alias 'release' (known: main)" in unknown.stderr
    experiment_id = client.get_run(run_id).info.experiment_id
    (child,) = client.search_runs([experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{run_id}'")
    missing = runner.invoke(app, ["check", str(run.root), "--baseline-run", child.info.run_id])  # a cell run
    assert missing.exit_code == 2 and "no baseline artifact" in missing.stderr
