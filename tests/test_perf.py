"""``bench perf`` in its reduced CI mode: every field of the JSON, MLflow logging; no timing asserts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from bench.cli import app
from bench.engine import parallel
from bench.perf import QUICK_SIZES, RATIOS, TIMES, WAYS, WORKLOAD_RATIOS, perf_inputs, time_interleaved
from bench.perf.workload import compare, plain_pgd
from bench.types import Bounds
from reports import drawing

N = 48
EPSILONS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3)


PARALLEL_SUITE = """
name: small_models
dataset: {name: digits, n: 60}
models: [mlp]
attacks: [fgsm, uniform_noise]
epsilons: [0, 0.1, 0.2]
batch_size: 20
"""


@pytest.fixture(scope="module")
def perf_doc(tmp_path_factory: pytest.TempPathFactory, mlflow_server) -> tuple[dict, str, str]:
    out = tmp_path_factory.mktemp("perf") / "perf.json"
    small = out.with_name("small_models.yaml")  # the name the 1.3x target applies to
    small.write_text(PARALLEL_SUITE)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
        args = ["perf", "--quick", "--scaling", "--device", "cpu", "--data", "digits", "--n", str(N), "--threads", "1"]
        models = ["--model", "lenet", "--model", "mlp", "--parallel", "--parallel-suite", str(small)]
        drawing.start(min_cores=1)  # as `bench perf` does (bench.cli.main): P4's figures on the drawing process
        try:
            result = CliRunner().invoke(app, [*args, *models, "--batch-size", "20", "--json", str(out)])
        finally:
            drawing.stop()
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


def test_workload_three_ways_same_inputs_and_the_harness_is_not_weaker(perf_doc: tuple[dict, str, str]) -> None:
    doc, output, _ = perf_doc
    assert doc["config"]["workload_steps"] == 10 and doc["config"]["workload_rel_step"] == pytest.approx(0.25)
    assert set(doc["workload"]) == {"lenet", "mlp"}
    assert doc["environment"]["device"] == "cpu" and doc["environment"]["gpu"] is None
    positive = sum(e > 0 for e in EPSILONS)
    for name, w in doc["workload"].items():
        assert w["n"] == N and w["epsilons"] == list(EPSILONS) and w["device"] == "cpu"
        assert w["attacks"]["pgd"] == {"norm": "linf", "steps": 10, "rel_step_size": 0.25, "random_start": True}
        assert set(w["times"]) == set(WAYS) and all(t > 0 for t in w["times"].values())
        assert all(w["best_times"][k] <= w["times"][k] for k in WAYS)
        assert set(w["ratios"]) == set(WORKLOAD_RATIOS) == set(w["best_ratios"])
        assert w["ratios"]["art_loop / harness"] == pytest.approx(w["times"]["art_loop"] / w["times"]["harness"])
        for way in WAYS:
            assert set(w["attack_seconds"][way]) == {"fgsm", "pgd"}
            assert sum(w["attack_seconds"][way].values()) <= w["times"][way] * 1.001
            for attack in ("fgsm", "pgd"):
                acc = w["robust_accuracy"][way][attack]
                assert len(acc) == len(EPSILONS) and all(0 <= a <= 1 for a in acc)
        # eps 0 is scored, not attacked, by every way: the loops agree on the clean accuracy
        assert w["robust_accuracy"]["art_loop"]["pgd"][0] == w["robust_accuracy"]["plain_loop"]["pgd"][0]
        # the plain loop pays one gradient per step, every sample, every eps > 0; the harness's sweep far fewer
        assert w["grad_evals"]["plain_loop"] == {"fgsm": N * positive, "pgd": 10 * N * positive}
        assert w["grad_evals"]["harness"]["fgsm"] == N
        assert w["grad_evals"]["harness"]["pgd"] < w["grad_evals"]["plain_loop"]["pgd"]
        assert len(w["mcnemar"]) == 2 * 2 * len(EPSILONS)
        for row in w["mcnemar"]:
            assert row["versus"] in ("art_loop", "plain_loop") and row["attack"] in ("fgsm", "pgd")
            assert 0 <= row["p_value"] <= row["p_holm"] <= 1
        # the real assertion: the harness's sweep is never significantly weaker than either loop
        assert w["harness_not_weaker"] is True, (name, w["mcnemar"])
    assert "P5 lenet" in output and "ratio to harness" in output


def test_scaling_points_figure_and_fresh_processes(perf_doc: tuple[dict, str, str]) -> None:
    doc, _, _ = perf_doc
    s = doc["scaling"]
    assert s["data"] == "digits" and s["split"] == "train" and s["model"] == "mlp"
    assert [p["n"] for p in s["points"]] == list(QUICK_SIZES)
    for p in s["points"]:
        assert set(p) == {
            "n",
            "wall_seconds",
            "attack_seconds",
            "seconds_per_sample",
            "attack_seconds_per_sample",
            "peak_rss_bytes",
            "rss_before_run_bytes",
        }
        assert 0 < p["attack_seconds"] < p["wall_seconds"]
        assert p["seconds_per_sample"] == pytest.approx(p["wall_seconds"] / p["n"])
        assert 0 < p["rss_before_run_bytes"] <= p["peak_rss_bytes"] < doc["peak_rss_bytes"] * 4
    first, last = s["points"][0], s["points"][-1]
    assert s["per_sample_ratio_largest_to_smallest"] == pytest.approx(
        last["seconds_per_sample"] / first["seconds_per_sample"]
    )
    assert s["peak_rss_largest_gib"] == pytest.approx(last["peak_rss_bytes"] / 2**30)
    assert s["attack_per_sample_ratio_largest_to_smallest"] == pytest.approx(
        last["attack_seconds_per_sample"] / first["attack_seconds_per_sample"]
    )
    figure = Path(s["figure"])
    assert figure.name == "perf.scaling.png" and figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_mcnemar_flags_a_harness_that_keeps_more_samples_robust() -> None:
    n, e = 200, 2
    loop = np.zeros((e, n), dtype=bool)
    weaker = loop.copy()
    weaker[1, :30] = True  # the harness misses 30 samples the loop fools, at the second eps
    same = {"fgsm": loop, "pgd": loop}
    rows = compare({"harness": {"fgsm": loop, "pgd": weaker}, "art_loop": same, "plain_loop": same}, [0.0, 0.1])
    flagged = [r for r in rows if r["p_holm"] < 0.05]
    assert {(r["versus"], r["attack"], r["eps"]) for r in flagged} == {
        ("art_loop", "pgd", 0.1),
        ("plain_loop", "pgd", 0.1),
    }
    assert all(r["harness_only_robust"] == 30 and r["loop_only_robust"] == 0 for r in flagged)
    # a stronger harness (the loop keeps samples the harness fools) is never flagged
    stronger = {"fgsm": loop, "pgd": loop}
    rows = compare({"harness": stronger, "art_loop": {"fgsm": loop, "pgd": weaker}, "plain_loop": same}, [0.0, 0.1])
    assert all(r["p_holm"] >= 0.05 for r in rows)


def test_plain_pgd_stays_in_the_ball_and_the_box(digits_test) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    x, y = digits_test.x[:16], digits_test.y[:16]
    adv = plain_pgd(model, x, y, 0.1, 0.025, 5, Bounds(0.0, 1.0), torch.Generator().manual_seed(0))
    assert adv.shape == x.shape and not adv.requires_grad
    assert float((adv - x).abs().max()) <= 0.1 + 1e-6
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    assert float((adv - x).abs().max()) > 0.05  # it moved


def test_targets_and_harness_breakdown(perf_doc: tuple[dict, str, str]) -> None:
    doc, output, _ = perf_doc
    ids = [(t["id"], t["model"]) for t in doc["targets"]]
    assert ids.count(("P1", "lenet")) == 1 and ids.count(("P1", "mlp")) == 1
    assert ids.count(("P5", "lenet")) == 2 and ids.count(("P5", "mlp")) == 2 and ids.count(("S", "mlp")) == 2
    assert ids.count(("P2", "lenet")) == 1 and ids.count(("P2", "mlp")) == 1 and ("P3", "lenet") not in ids
    bounds = {(t["id"], t["model"]): t["target"] for t in doc["targets"] if t["id"] in ("P1", "P2")}
    assert bounds == {("P1", "lenet"): "<= 1.08", ("P1", "mlp"): "<= 1.08", ("P2", "lenet"): "<= 1.05"} | {
        ("P2", "mlp"): "<= 1.1"
    }
    assert ids.count(("P4", "")) == 3 and ids.count(("P6", "")) == 2
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
    # the figures were drawn by the drawing process, whose memory counts towards the run's
    assert h["drawing_process"] is True and 0 < h["drawing_peak_rss_bytes"] < h["peak_rss_bytes"]
    assert h["total_peak_rss_bytes"] == h["peak_rss_bytes"] + h["drawing_peak_rss_bytes"]
    (memory,) = [t for t in doc["targets"] if t["what"].startswith("peak memory of the harness run")]
    assert memory["measured"] == pytest.approx(h["total_peak_rss_bytes"] / 2**30)
    assert h["mlflow_seconds"] > 0 and h["mlflow_fraction"] == pytest.approx(h["mlflow_seconds"] / h["wall_seconds"])
    # --parallel: the suite serially and with two loky workers, identical results, the small-model target
    (point,) = doc["parallel"]["suites"]
    assert point["cells"] == 2 and point["n_jobs"] == 2 and point["identical_results"] is True
    assert point["workers"]["requested_n_jobs"] == 2 and point["workers"]["n_jobs"] in (1, 2)
    assert len(point["serial_runs"]) == len(point["parallel_runs"]) == 2
    assert point["serial_seconds"] == min(point["serial_runs"]) and point["parallel_seconds"] == min(
        point["parallel_runs"]
    )
    assert point["speedup"] == pytest.approx(point["serial_seconds"] / point["parallel_seconds"])
    p6 = [t for t in doc["targets"] if t["id"] == "P6"]
    assert p6[0]["target"] == ">= 1.3" and p6[1]["passed"] is True
    assert doc["config"]["parallel_suites"] == [point["suite"]]
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
    workload = doc["workload"]["lenet"]
    assert metrics["lenet.workload.harness_seconds"] == pytest.approx(workload["times"]["harness"])
    assert metrics["lenet.workload.art_loop_over_harness"] == pytest.approx(workload["ratios"]["art_loop / harness"])
    assert metrics["harness.overhead_fraction"] == pytest.approx(doc["harness"]["overhead_fraction"])
    assert metrics["harness.mlflow_fraction"] == pytest.approx(doc["harness"]["mlflow_fraction"])
    assert metrics["parallel.small_models.speedup"] == pytest.approx(doc["parallel"]["suites"][0]["speedup"])
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
        (["--device", "tpu"], "--device: 'tpu' is not allowed (allowed: cpu, cuda, cuda:N, auto)"),
        (["--scaling-n", "100"], "--scaling-n: only used with --scaling"),
        (["--parallel-suite", "suites/quickstart.yaml"], "--parallel-suite: only used with --parallel"),
        (["--parallel", "--parallel-suite", "no/such.yaml"], "--parallel-suite: file no/such.yaml not found"),
    ],
)
def test_bad_options_name_the_option_and_allowed_values(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["perf", "--quick", "--no-mlflow", *args])
    assert result.exit_code == 2
    assert message in result.output.replace("\n", " ")


def test_plan_workers_never_starts_more_local_workers_than_cells(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parallel, "usable_cores", lambda: 4)  # threads per worker follow the usable cores
    assert parallel.plan_workers("loky", 2, cells=26) == (2, 2)
    assert parallel.plan_workers("loky", 4, cells=3) == (3, 1)
    # one cell left: it runs in this process with torch's own (all-core) setting, as serially
    assert parallel.plan_workers("loky", 2, cells=1) == (1, 0)
    assert parallel.plan_workers("threading", 4, cells=2) == (2, 2)
    assert parallel.plan_workers("loky", 1, cells=5) == (1, 0)
    assert parallel.plan_workers("loky", 2) == (2, 2)  # cells unknown: as asked
    # dask: the cluster decides; one torch thread per task
    assert parallel.plan_workers("dask", 2, cells=1) == (2, 1)
    assert parallel.plan_workers("dask", 1, cells=8) == (-1, 1)


def test_the_plan_says_why_it_runs_the_workers_it_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parallel, "usable_cores", lambda: 4)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert parallel.choose_workers("dask", 1, cells=5, device=cpu, measure=None).reason == "as asked"
    # more cells than any machine's cores: -1 workers run as asked
    assert parallel.choose_workers("loky", -1, cells=10**6, device=cuda, measure=None).reason == "as asked"
    capped = parallel.choose_workers("loky", 4, cells=2, device=cuda, measure=None)
    assert (capped.n_jobs, capped.reason) == (2, "2 worker(s) for 2 cell(s) to run")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_device_cuda_without_a_gpu_is_one_line_error() -> None:
    result = CliRunner().invoke(app, ["perf", "--quick", "--no-mlflow", "--no-harness", "--device", "cuda"])
    assert result.exit_code == 2
    assert "no CUDA device is available" in result.output.replace("\n", " ")


def test_perf_certify_times_the_certifiers_beside_arts_deepz(tmp_path: Path) -> None:
    """``bench perf --certify`` on lenet_crown's reference weights: every time and count, no timing assert."""
    out = tmp_path / "perf.json"
    args = ["perf", "--certify", "--no-micro", "--no-workload", "--no-harness", "--no-mlflow", "--n", "24"]
    result = CliRunner().invoke(app, [*args, "--repeats", "1", "--threads", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    certify = json.loads(out.read_text())["certify"]
    assert certify["model"] == "lenet_crown" and certify["n"] == 24
    assert set(certify["times"]) == {"forward", "ibp", "crown", "crown_ibp"}
    assert set(certify["ratios"]) == {"ibp / forward", "crown / forward", "deepz / crown", "smoothing / bound"}
    assert certify["art"]["n"] == 24 and certify["art"]["deepz_only"] == 0  # CROWN certifies all DeepZ does
    assert certify["certified"]["crown"] >= certify["certified"]["ibp"] > 0
    targets = [t["what"] for t in json.loads(out.read_text())["targets"] if t["id"] == "C"]
    assert len(targets) == 5 and "ART DeepZ / crown time (24 inputs)" in targets
    assert "ART DeepZ, 24 inputs" in result.output
