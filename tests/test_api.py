"""``bench.evaluate``: the README's example runs, the table equals a suite cell's rows, MLflow gets the run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bench
from bench.api import EvaluateError
from bench.data import load_dataset
from bench.rundir import RESULT_COLUMNS
from tests.conftest import trained
from tests.docblocks import blocks

REPO = Path(__file__).resolve().parent.parent


def _readme_example() -> str:
    """The README's ``bench.evaluate`` example (also run as written by tests/test_docs_examples.py)."""
    (block,) = [b for b in blocks(REPO / "README.md") if b.kind == "python" and "bench.evaluate(" in b.code]
    return block.code


def test_the_readme_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    scope: dict[str, object] = {}
    exec(compile(_readme_example(), "README.md (Evaluate your own model)", "exec"), scope)
    table = scope["table"]
    assert isinstance(table, pd.DataFrame) and list(table.columns) == RESULT_COLUMNS
    assert table["eps"].tolist() == [0, 0.05, 0.1, 0.2] and table["n"].eq(360).all()
    assert table["robust_accuracy"].iloc[0] == table["clean_accuracy"].iloc[0] > 0.9
    assert table["robust_accuracy"].iloc[-1] < table["robust_accuracy"].iloc[0]
    assert "robust_accuracy" in capsys.readouterr().out


def test_evaluate_equals_the_suite_cell(tmp_path: Path) -> None:
    """Same model, data, attack and seed: bench.evaluate gives the numbers of ``bench run``'s cell."""
    from bench.engine import run_suite
    from bench.suite import validate

    suite = validate(
        {
            "name": "api-test",
            "dataset": {"name": "digits", "n": 60},
            "models": ["mlp"],
            "attacks": [{"name": "pgd", "params": {"steps": 5}}],
            "epsilons": [0, 0.1, 0.3],
            "tracking": {"enabled": False, "examples": 0},
        }
    )
    run_suite(suite, out=tmp_path / "run", track=False, echo=None)
    cell = pd.read_csv(tmp_path / "run" / "results.csv")
    data = load_dataset("digits", "test")
    x, y = data.x[:60].numpy(), data.y[:60].numpy()  # numpy in, like a notebook
    table = bench.evaluate(trained("mlp"), x, y, "pgd", [0.3, 0, 0.1], steps=5, model_name="mlp")
    assert table["eps"].tolist() == [0, 0.1, 0.3]
    assert table["clean_accuracy"].tolist() == cell["clean_accuracy"].tolist()
    # the cell seed differs (suite seed vs evaluate's): the curves agree closely, eps 0 exactly
    assert table["robust_accuracy"].iloc[0] == cell["robust_accuracy"].iloc[0]
    assert np.abs(table["robust_accuracy"].to_numpy() - cell["robust_accuracy"].to_numpy()).max() <= 0.05
    assert json.loads(table["attack_params"].iloc[0])["steps"] == 5
    again = bench.evaluate(trained("mlp"), x, y, "pgd", [0, 0.1, 0.3], steps=5, model_name="mlp")
    pd.testing.assert_frame_equal(table.drop(columns="seconds"), again.drop(columns="seconds"))


def test_evaluate_minimal_eps_and_bad_arguments() -> None:
    data = load_dataset("digits", "test")
    model = trained("mlp")
    table = bench.evaluate(model, data.x[:40], data.y[:40], "fgsm", [0, 0.1, 0.3], minimal_eps=True)
    assert table["median_min_eps"].nunique() == 1 and 0 < table["median_min_eps"].iloc[0] <= 0.3
    with pytest.raises(EvaluateError, match=r"x: must be \(N, C, H, W\)"):
        bench.evaluate(model, data.x[:4, 0], data.y[:4])
    with pytest.raises(EvaluateError, match=r"x: values in .* outside bounds \[0, 1\]"):
        bench.evaluate(model, data.x[:4] * 255, data.y[:4])
    with pytest.raises(EvaluateError, match="epsilons: must be one or more finite numbers >= 0"):
        bench.evaluate(model, data.x[:4], data.y[:4], epsilons=[-0.1])
    with pytest.raises(EvaluateError, match="y: must be 4 integer labels"):
        bench.evaluate(model, data.x[:4], data.y[:4].float())
    with pytest.raises(EvaluateError, match="params: attack 'pgd' has no parameter 'stepz' \\(allowed: bpda"):
        bench.evaluate(model, data.x[:4], data.y[:4], "pgd", stepz=3)
    with pytest.raises(AttributeError, match="no attribute 'evaluat'"):
        bench.evaluat  # noqa: B018


def test_evaluate_logs_to_mlflow(mlflow_uri: str) -> None:
    from mlflow.tracking import MlflowClient

    data = load_dataset("digits", "test")
    table = bench.evaluate(
        trained("mlp"), data.x[:40], data.y[:40], "fgsm", [0, 0.1, 0.3], track=True, experiment="api-test"
    )
    run = MlflowClient(mlflow_uri).get_run(table.attrs["mlflow_run_id"])
    assert run.info.run_name == "model · fgsm" and run.info.status == "FINISHED"
    assert run.data.params["attack"] == "fgsm" and run.data.params["n"] == "40"
    assert run.data.params["epsilons"] == "0,0.1,0.3" and run.data.params["norm"] == "linf"
    assert run.data.metrics["clean_accuracy"] == table["clean_accuracy"].iloc[0]
    history = MlflowClient(mlflow_uri).get_metric_history(run.info.run_id, "robust_accuracy_linf")
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == table["robust_accuracy"].tolist()
