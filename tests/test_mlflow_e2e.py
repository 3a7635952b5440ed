"""`bench run` end to end against a real `mlflow server` on 127.0.0.1, read back through the MLflow client."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from bench.cli import app

pytestmark = pytest.mark.mlflow_server

SUITE = """
name: e2e
description: end-to-end test suite
dataset: {name: digits, split: test, n: 80}
models: [mlp, lenet]
attacks: [fgsm]
epsilons: [0, 0.05, 0.1, 0.2]
tracking: {experiment: e2e-test, examples: 4}
"""


@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory, mlflow_server):
    import os

    root = tmp_path_factory.mktemp("e2e")
    suite = root / "e2e.yaml"
    suite.write_text(SUITE)
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = mlflow_server.uri
    try:
        result = CliRunner().invoke(app, ["run", str(suite), "--out", str(root / "run")])
    finally:
        if old is not None:
            os.environ["MLFLOW_TRACKING_URI"] = old
    assert result.exit_code == 0, result.output
    client = MlflowClient(tracking_uri=mlflow_server.uri)
    return root / "run", client, result.output


def _runs(client: MlflowClient):
    exp = client.get_experiment_by_name("e2e-test")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def test_parent_and_nested_runs(e2e) -> None:
    _run_dir, client, output = e2e
    parents, children = _runs(client)
    assert len(parents) == 1 and len(children) == 2
    parent = parents[0]
    assert f"MLflow parent run: {parent.info.run_id}" in output
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert {c.info.run_name for c in children} == {"mlp/fgsm", "lenet/fgsm"}
    assert parent.data.params["dataset"] == "digits" and parent.data.params["n"] == "80"
    assert parent.data.tags["bench.suite"] == "e2e"
    assert "version.torch" in parent.data.tags
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"suite.yaml", "manifest.json", "results.csv", "models.json"} <= artifacts
    assert parent.inputs.dataset_inputs and parent.inputs.dataset_inputs[0].dataset.name == "digits-test"


def test_metric_history_is_the_epsilon_curve(e2e) -> None:
    import pandas as pd

    run_dir, client, _ = e2e
    results = pd.read_csv(run_dir / "results.csv")
    _, children = _runs(client)
    for child in children:
        model = child.data.params["model"]
        history = sorted(client.get_metric_history(child.info.run_id, "robust_accuracy"), key=lambda m: m.step)
        assert [m.step for m in history] == [0, 50, 100, 200]
        expected = results[results["model"] == model].sort_values("eps")["robust_accuracy"].tolist()
        assert [m.value for m in history] == pytest.approx(expected)
        assert history[0].value == pytest.approx(child.data.metrics["clean_accuracy"])
        assert all(b.value <= a.value for a, b in itertools.pairwise(history))
        assert child.data.metrics["robust_accuracy_eps_0.1"] == pytest.approx(expected[2])
        assert 0 <= child.data.metrics["robust_accuracy_auc"] <= 1
        assert child.data.params["attack.norm"] == "linf"
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"robust_accuracy_curve.png", "robust_accuracy_table.json", "adversarial_examples.png"} <= artifacts


def test_sync_is_idempotent(e2e) -> None:
    run_dir, client, _ = e2e
    before, _ = _runs(client)
    result = CliRunner().invoke(app, ["sync", str(run_dir)], env={"MLFLOW_TRACKING_URI": client.tracking_uri})
    assert result.exit_code == 0, result.output
    assert before[0].info.run_id in result.output
    parents, children = _runs(client)
    assert len(parents) == 1 and len(children) == 2


def test_unreachable_server_keeps_the_run_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    suite = tmp_path / "s.yaml"
    suite.write_text(SUITE.replace("n: 80", "n: 20"))
    result = CliRunner().invoke(app, ["run", str(suite), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "MLflow tracking failed" in result.output and "bench sync" in result.output
    assert (tmp_path / "run" / "results.csv").is_file()
    failed = CliRunner().invoke(app, ["sync", str(tmp_path / "run")])
    assert failed.exit_code == 1 and "unreachable" in failed.output
