"""``bench perf`` in its reduced CI mode: every field of the JSON, MLflow logging; no timing asserts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from bench.cli import app
from bench.perf import RATIOS, TIMES, perf_inputs, time_interleaved

N = 48
EPSILONS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3)


@pytest.fixture(scope="module")
def perf_doc(tmp_path_factory: pytest.TempPathFactory, mlflow_server) -> tuple[dict, str, str]:
    out = tmp_path_factory.mktemp("perf") / "perf.json"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
        args = ["perf", "--quick", "--data", "digits", "--n", str(N), "--model", "lenet", "--model", "mlp"]
        result = CliRunner().invoke(app, [*args, "--batch-size", "20", "--json", str(out)])
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text()), result.output, mlflow_server.uri


def test_json_has_every_time_ratio_and_count(perf_doc: tuple[dict, str, str]) -> None:
    doc, _, _ = perf_doc
    assert doc["format"] == "bench-perf"
    assert doc["config"]["n"] == N and doc["config"]["batch_size"] == 20 and doc["config"]["repeats"] == 1
    assert doc["inputs"] == {"n": N, "distinct": N, "shape": [1, 8, 8]}
    assert set(doc["models"]) == {"lenet", "mlp"}
    steps = doc["config"]["pgd_steps"]
    for name, m in doc["models"].items():
        assert set(m["times"]) == set(TIMES), name
        assert all(t > 0 for t in m["times"].values())
        assert set(m["ratios"]) == set(RATIOS) and set(m["best_ratios"]) == set(RATIOS)
        assert all(m["best_times"][k] <= m["times"][k] for k in TIMES)
        # one gradient per sample serves the whole FGSM sweep
        assert m["grad_evals"]["fgsm_sweep"] == N
        # without early exit every sample takes every step
        assert m["grad_evals"]["pgd"] == steps * N
        assert m["grad_evals"]["pgd_naive"] == steps * N * sum(e > 0 for e in EPSILONS)
        assert m["grad_evals"]["pgd_early_stop"] <= m["grad_evals"]["pgd"]
        assert m["grad_evals"]["pgd_sweep"] < m["grad_evals"]["pgd_naive"]
        bound = m["times"]["forward_backward"] + len(EPSILONS) * m["times"]["forward"]
        assert m["bounds"]["fgsm"] == pytest.approx(bound)
        assert m["ratios"]["pgd_sweep / pgd_naive"] == pytest.approx(m["times"]["pgd_sweep"] / m["times"]["pgd_naive"])
        for key in ("fgsm_sweep", "art_fgsm_loop", "pgd_sweep", "pgd_naive"):
            assert len(m["robust_accuracy"][key]) == len(EPSILONS)
        # the sweep-aware PGD is never weaker than the naive loop, eps by eps
        assert m["pgd_sweep_not_weaker"] is True
        sweep, naive = m["robust_accuracy"]["pgd_sweep"], m["robust_accuracy"]["pgd_naive"]
        assert all(s <= v for s, v in zip(sweep, naive, strict=True))
        # native FGSM and ART's per-eps loop attack the same way (sum-reduced loss, same clipping)
        assert m["robust_accuracy"]["fgsm_sweep"] == pytest.approx(m["robust_accuracy"]["art_fgsm_loop"], abs=1 / N)
        assert m["robust_accuracy"]["fgsm_sweep"][0] == m["robust_accuracy"]["pgd_naive"][0]


def test_targets_and_harness_breakdown(perf_doc: tuple[dict, str, str]) -> None:
    doc, output, _ = perf_doc
    ids = [(t["id"], t["model"]) for t in doc["targets"]]
    assert ids.count(("P1", "lenet")) == 2 and ids.count(("P1", "mlp")) == 2
    assert ("P2", "lenet") in ids and ("P2", "mlp") in ids and ("P3", "lenet") in ids
    assert ids.count(("P4", "")) == 2
    for t in doc["targets"]:
        assert set(t) == {"id", "model", "what", "target", "measured", "measured_best", "passed"}
        assert isinstance(t["passed"], bool)
    h = doc["harness"]
    assert h["reduced"] is True and h["n"] == N and h["models"] == ["lenet", "mlp"] and h["cells"] == 2
    assert h["attack_seconds"] > 0 and h["report_seconds"] > 0 and h["clean_seconds"] > 0
    assert h["wall_seconds"] >= h["prepare_seconds"] + h["attack_seconds"]
    assert h["crosscheck"] is False and h["crosscheck_attack_seconds"] == 0  # the reduced mode has no cross-check
    expected = h["wall_seconds"] - h["attack_seconds"] - h["crosscheck_attack_seconds"] - h["clean_seconds"]
    assert h["overhead_seconds"] == pytest.approx(expected)
    assert 0 < h["peak_rss_bytes"] <= doc["peak_rss_bytes"]
    assert "art_pgd / pgd" in output and "targets" in output


def test_mlflow_perf_experiment_holds_every_time(perf_doc: tuple[dict, str, str]) -> None:
    import mlflow

    doc, _, uri = perf_doc
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("perf")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id], max_results=1, order_by=["attributes.start_time DESC"])
    metrics = run.data.metrics
    for name, m in doc["models"].items():
        for key, seconds in m["times"].items():
            assert metrics[f"{name}.{key}_seconds"] == pytest.approx(seconds)
    assert metrics["mlp.art_pgd_over_pgd"] == pytest.approx(doc["models"]["mlp"]["ratios"]["art_pgd / pgd"])
    assert metrics["harness.overhead_fraction"] == pytest.approx(doc["harness"]["overhead_fraction"])
    assert run.data.params["n"] == str(N)
    logged = json.loads(Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="perf.json",
                                                                  tracking_uri=uri)).read_text())  # fmt: skip
    assert logged["models"]["lenet"]["times"] == doc["models"]["lenet"]["times"]


def test_inputs_repeat_the_split_when_n_exceeds_it(digits_test) -> None:
    x, y = perf_inputs(digits_test, len(digits_test) * 2 + 3)
    assert x.shape == (len(digits_test) * 2 + 3, *digits_test.x.shape[1:])
    assert torch.equal(x[len(digits_test) : 2 * len(digits_test)], digits_test.x)
    assert torch.equal(y[-3:], digits_test.y[:3])


def test_time_interleaved_warms_up_on_a_slice_then_runs_each_bench_repeats_times() -> None:
    calls: list[tuple[str, int]] = []

    def bench(name: str):
        def run(x: torch.Tensor, y: torch.Tensor) -> int:
            calls.append((name, len(x)))
            return len(x)

        return run

    x, y = torch.zeros(10, 1, 2, 2), torch.zeros(10, dtype=torch.long)
    medians, samples, last = time_interleaved({"a": bench("a"), "b": bench("b")}, x, y, repeats=3, warmup=4)
    assert calls == [("a", 4), ("b", 4)] + [("a", 10), ("b", 10)] * 3
    assert set(medians) == {"a", "b"} and all(len(s) == 3 for s in samples.values())
    assert last == {"a": 10, "b": 10}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "lenett"], "did you mean 'lenet'"),
        (["--data", "mnist6k"], "unknown data set 'mnist6k'"),
        (["--suite", "no/such/suite.yaml"], "--suite: file no/such/suite.yaml not found"),
    ],
)
def test_bad_options_name_the_option_and_allowed_values(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["perf", "--quick", "--no-mlflow", *args])
    assert result.exit_code == 2
    assert message in result.output.replace("\n", " ")
