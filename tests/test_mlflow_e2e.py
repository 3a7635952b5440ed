"""`bench run` end to end against a real `mlflow server` on 127.0.0.1, read back through the MLflow client.

Checks the layout docs/mlflow.md promises a reviewer: a model-training experiment, runs named
by suite and time and by model · attack, filterable params and tags, the run's real wall time as its
duration, one curve metric per norm with its own step unit, figures on the parent, and the closing
lines of `bench run` (the run's URL).
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import re
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from bench import stats
from bench.cli import app
from bench.tracking.layout import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, curve_step, ui_links

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

# One attack per norm family (and an unbounded one) on 8x8 digits: each gets its own curve metric.
MULTI = """
name: e2e-norms
dataset: {name: digits, split: test, n: 24}
models: [mlp]
attacks:
  - fgsm
  - {name: pgd, label: pgd_l2, params: {norm: l2, steps: 5}, epsilons: [0, 0.5, 3], minimal_eps: true}
  - {name: salt_pepper, epsilons: [0, 0.05, 0.1]}
  - {name: occlusion, epsilons: [0, 2, 4]}
  - {name: fooling_images, epsilons: [0]}
epsilons: [0, 0.1, 0.2]
tracking: {experiment: e2e-norms, examples: 2}
"""


def _bench_run(root: Path, text: str, uri: str) -> tuple[Path, str]:
    suite = root / "suite.yaml"
    suite.write_text(text)
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        result = CliRunner().invoke(app, ["run", str(suite), "--out", str(root / "run")])
    finally:
        if old is not None:
            os.environ["MLFLOW_TRACKING_URI"] = old
    assert result.exit_code == 0, result.output
    return root / "run", result.output


@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory, mlflow_server):
    run_dir, output = _bench_run(tmp_path_factory.mktemp("e2e"), SUITE, mlflow_server.uri)
    return run_dir, MlflowClient(tracking_uri=mlflow_server.uri), output


@pytest.fixture(scope="module")
def multi(tmp_path_factory: pytest.TempPathFactory, mlflow_server):
    run_dir, _ = _bench_run(tmp_path_factory.mktemp("e2e-norms"), MULTI, mlflow_server.uri)
    return run_dir, MlflowClient(tracking_uri=mlflow_server.uri)


def _runs(client: MlflowClient, experiment: str = "e2e-test"):
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def _ms(iso: str) -> int:
    return int(dt.datetime.fromisoformat(iso).timestamp() * 1000)


def test_parent_and_nested_runs(e2e) -> None:
    run_dir, client, output = e2e
    exp = client.get_experiment_by_name("e2e-test")
    assert exp.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND == "custom_model_development"
    parents, children = _runs(client)
    assert len(parents) == 1 and len(children) == 2
    parent = parents[0]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    started = dt.datetime.fromisoformat(manifest["started"]).astimezone(dt.UTC)
    assert parent.info.run_name == f"e2e {started:%Y-%m-%d %H:%M}"
    assert re.fullmatch(r"e2e \d{4}-\d\d-\d\d \d\d:\d\d", parent.info.run_name)
    note = parent.data.tags["mlflow.note.content"]
    assert note.startswith("end-to-end test suite\n\n**Leaderboard**")
    assert "| model | clean_accuracy | robust_linf | auc_linf |" in note
    assert "leaderboard.json" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert f"MLflow parent run: {parent.info.run_id}" in output
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert {c.info.run_name for c in children} == {"mlp · fgsm", "lenet · fgsm"}
    assert parent.data.params["dataset"] == "digits" and parent.data.params["n"] == "80"
    assert parent.data.tags["bench.suite"] == "e2e"
    assert "version.torch" in parent.data.tags
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"suite.yaml", "manifest.json", "results.csv", "models.json", "comparison.png", "figures"} <= artifacts
    assert "figures/curve_fgsm.png" in {a.path for a in client.list_artifacts(parent.info.run_id, "figures")}
    assert parent.inputs.dataset_inputs and parent.inputs.dataset_inputs[0].dataset.name == "digits-test"


def test_wall_time_and_cells_on_the_parent(e2e) -> None:
    """MLflow's Duration column (end - start) is the run's wall time, not the seconds the logging took."""
    run_dir, client, _ = e2e
    manifest = json.loads((run_dir / "manifest.json").read_text())
    (parent,), children = _runs(client)
    assert parent.info.start_time == _ms(manifest["started"])
    assert parent.info.end_time == _ms(manifest["finished"])
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["wall_seconds"] == pytest.approx(manifest["wall_seconds"])
    # started/finished bracket the run (wall_seconds also counts the start-up before `started` was stamped)
    duration = (parent.info.end_time - parent.info.start_time) / 1000
    assert 0 < duration <= manifest["wall_seconds"] + 0.01
    assert parent.data.metrics["cells"] == 2 and parent.data.params["cells"] == "2"
    for child in children:  # each cell's own time, inside the parent's span
        cell = f"{child.data.params['model']}__{child.data.params['attack']}"
        assert (child.info.end_time - child.info.start_time) / 1000 == pytest.approx(
            manifest["cell_seconds"][cell], abs=0.002
        )
        assert parent.info.start_time <= child.info.start_time <= child.info.end_time <= parent.info.end_time


def test_nested_runs_are_filterable_by_model_data_and_recipe(e2e) -> None:
    run_dir, client, _ = e2e
    models = json.loads((run_dir / "models.json").read_text())
    exp = client.get_experiment_by_name("e2e-test")
    _, children = _runs(client)
    for child in children:
        model = child.data.params["model"]
        expected = {"model": model, "attack": "fgsm", "norm": "linf", "dataset": "digits", "n": "80", "seed": "0"}
        expected |= {f"recipe.{k}": str(v) for k, v in models[model]["recipe"].items()}
        assert "recipe.epochs" in expected
        for key, value in expected.items():
            assert child.data.params[key] == value, key
            assert child.data.tags[key] == value, key
    epochs = models["lenet"]["recipe"]["epochs"]
    found = client.search_runs(
        [exp.experiment_id], filter_string=f"tags.model = 'lenet' and params.`recipe.epochs` = '{epochs}'"
    )
    assert [r.info.run_name for r in found] == ["lenet · fgsm"]
    assert client.search_runs([exp.experiment_id], filter_string="params.`recipe.epochs` = '999'") == []


def test_metric_history_is_the_epsilon_curve(e2e) -> None:
    import pandas as pd

    run_dir, client, _ = e2e
    results = pd.read_csv(run_dir / "results.csv")
    _, children = _runs(client)
    for child in children:
        model = child.data.params["model"]
        history = sorted(client.get_metric_history(child.info.run_id, "robust_accuracy_linf"), key=lambda m: m.step)
        assert [m.step for m in history] == [0, 50, 100, 200]  # linf: thousandths of the pixel range
        rows = results[results["model"] == model].sort_values("eps")
        expected = rows["robust_accuracy"].tolist()
        assert [m.value for m in history] == pytest.approx(expected)
        assert history[0].value == pytest.approx(child.data.metrics["clean_accuracy"])
        assert all(b.value <= a.value for a, b in itertools.pairwise(history))
        success = client.get_metric_history(child.info.run_id, "attack_success_rate_linf")
        assert sorted(m.step for m in success) == [0, 50, 100, 200]
        # no per-eps scalars crowding the chart grid, no unit-less "robust_accuracy" curve
        assert not [k for k in child.data.metrics if k.startswith("robust_accuracy_eps_") or k == "robust_accuracy"]
        reference = stats.reference_auc(rows["eps"], rows["robust_accuracy"], "linf").value
        assert child.data.metrics["robust_accuracy_auc"] == pytest.approx(reference)
        suite_range = stats.curve_auc(rows["eps"], rows["robust_accuracy"])
        assert child.data.metrics["robust_accuracy_auc_suite_range"] == pytest.approx(suite_range)
        assert child.data.params["attack.norm"] == "linf"
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"robust_accuracy_curve.png", "robust_accuracy_table.json", "adversarial_examples.png"} <= artifacts
        # the example grid is the report's PNG, logged as it is rather than drawn a second time
        logged = Path(client.download_artifacts(child.info.run_id, "adversarial_examples.png")).read_bytes()
        report = run_dir / "report" / "figures" / f"r1-examples-{model}__fgsm.png"
        assert logged == report.read_bytes()


def test_a_linked_report_figure_is_not_logged(tmp_path: Path) -> None:
    """The run directory is untrusted: a report figure that is a link (or not a PNG) is drawn anew, not read."""
    from bench.rundir import RunDir
    from bench.tracking.cells import report_png

    figures = tmp_path / "report" / "figures"
    figures.mkdir(parents=True)
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"\x89PNG\r\n\x1a\nsecret")
    (figures / "r1-examples-m__a.png").symlink_to(secret)
    (figures / "r1-examples-m__b.png").write_bytes(b"not a png")
    (figures / "r1-examples-m__c.png").write_bytes(b"\x89PNG\r\n\x1a\nok")
    run = RunDir(tmp_path)
    assert report_png(run, "r1-examples-m__a.png") is None
    assert report_png(run, "r1-examples-m__b.png") is None
    assert report_png(run, "r1-examples-m__missing.png") is None
    assert report_png(run, "r1-examples-m__c.png") == b"\x89PNG\r\n\x1a\nok"


def test_each_norm_family_has_its_own_curve_metric(multi) -> None:
    import pandas as pd

    run_dir, client = multi
    results = pd.read_csv(run_dir / "results.csv")
    _, children = _runs(client, "e2e-norms")
    by_name = {c.info.run_name: c for c in children}
    expected = {
        "mlp · fgsm": ("robust_accuracy_linf", [0, 100, 200]),
        "mlp · pgd_l2": ("robust_accuracy_l2", [0, 50, 300]),  # hundredths of an L2 radius
        "mlp · salt_pepper": ("robust_accuracy_l0", [0, 50, 100]),  # per mille of the pixels
        "mlp · occlusion": ("robust_accuracy_patch", [0, 2, 4]),  # the patch side in pixels
    }
    assert set(by_name) == {*expected, "mlp · fooling_images"}
    for name, (metric, steps) in expected.items():
        child = by_name[name]
        curves = [k for k in child.data.metrics if k.startswith("robust_accuracy_") and "auc" not in k]
        assert curves == [metric], name
        history = sorted(client.get_metric_history(child.info.run_id, metric), key=lambda m: m.step)
        assert [m.step for m in history] == steps
        rows = results[results["attack"] == child.data.params["attack"]].sort_values("eps")
        assert [curve_step(child.data.params["norm"], e) for e in rows["eps"]] == steps
        assert [m.value for m in history] == pytest.approx(rows["robust_accuracy"].tolist())
    # the bisected median minimal eps, in the norm's units, only where the suite asked for it
    median = float(results.loc[results["attack"] == "pgd_l2", "median_min_eps"].iloc[0])
    assert 0 < median <= 3
    assert by_name["mlp · pgd_l2"].data.metrics["median_min_eps_l2"] == pytest.approx(median)
    assert [k for c in children for k in c.data.metrics if k.startswith("median_min_eps")] == ["median_min_eps_l2"]
    unbounded = by_name["mlp · fooling_images"]
    assert unbounded.data.params["norm"] == "none"
    assert "attack_success_rate" in unbounded.data.metrics
    assert not [k for k in unbounded.data.metrics if k.endswith(("_linf", "_l2", "_l0", "_patch"))]
    assert "robust_accuracy_curve.png" not in {a.path for a in client.list_artifacts(unbounded.info.run_id)}
    (parent,), _ = _runs(client, "e2e-norms")
    assert parent.data.metrics["cells"] == 5


def test_bench_run_ends_with_the_run_url(e2e) -> None:
    _, client, output = e2e
    (parent,), _ = _runs(client)
    url = f"{client.tracking_uri}/#/experiments/{parent.info.experiment_id}/runs/{parent.info.run_id}"
    url += "?workflowType=machine_learning"
    assert output.rstrip().splitlines()[-1] == f"open: {url}"


def test_review_command_for_a_local_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A relative sqlite store becomes absolute, so the printed `mlflow ui` command works from anywhere."""
    monkeypatch.chdir(tmp_path)
    command, url = ui_links("sqlite:///mlflow.db", "3", "abc")
    assert command == f"mlflow ui --backend-store-uri sqlite:///{tmp_path / 'mlflow.db'}"
    assert url == "http://127.0.0.1:5000/#/experiments/3/runs/abc?workflowType=machine_learning"
    command, _ = ui_links(f"sqlite:///{tmp_path}/x y.db", "1", "r")
    assert command == f"mlflow ui --backend-store-uri 'sqlite:///{tmp_path}/x y.db'"
    command, url = ui_links("http://host:8080/", "1", "r")
    assert (command, url) == (None, "http://host:8080/#/experiments/1/runs/r?workflowType=machine_learning")


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
