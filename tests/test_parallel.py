"""Cells run through joblib: serial, loky workers and a dask.distributed cluster give the same results."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from bench.cli import app

SUITE = {
    "name": "parallel-test",
    "seed": 3,
    "dataset": {"name": "digits", "n": 96},
    "models": ["mlp", "lenet"],
    "attacks": [
        "fgsm",
        {"name": "pgd", "params": {"steps": 5, "rel_step_size": 0.5}},
        {"name": "gaussian_noise", "label": "noise"},
    ],
    "epsilons": [0, 0.1, 0.25],
    "batch_size": 40,  # several batches per cell, so per-batch seeds matter
    "tracking": {"enabled": False, "examples": 2},
}


@pytest.fixture(scope="module")
def suite_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("parallel") / "suite.yaml"
    path.write_text(yaml.safe_dump(SUITE))
    return path


def _run(suite_file: Path, out: Path, *extra: str) -> pd.DataFrame:
    result = CliRunner().invoke(app, ["run", str(suite_file), "--out", str(out), "--no-mlflow", *extra])
    assert result.exit_code == 0, result.output
    return pd.read_csv(out / "results.csv")


def _same_results(a: pd.DataFrame, b: pd.DataFrame) -> None:
    # Only wall time may differ between executions.
    pd.testing.assert_frame_equal(a.drop(columns="seconds"), b.drop(columns="seconds"), check_exact=True)


def test_serial_loky_and_dask_cluster_give_identical_results(suite_file: Path, tmp_path: Path) -> None:
    from dask.distributed import LocalCluster

    serial = _run(suite_file, tmp_path / "serial")
    assert len(serial) == 2 * 3 * 3
    assert (serial["grad_evals"][serial["attack"] == "pgd"] > 0).any()

    loky = _run(suite_file, tmp_path / "loky", "--n-jobs", "2", "--exact-workers")  # workers even if predicted slower
    _same_results(serial, loky)
    workers = json.loads((tmp_path / "loky" / "manifest.json").read_text())["workers"]
    assert workers["n_jobs"] == 2 and workers["threads_per_worker"] >= 1 and workers["predicted_gain"] is None

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        dask = _run(suite_file, tmp_path / "dask", "--backend", "dask", "--scheduler", cluster.scheduler_address)
        assert cluster.scheduler_address in (tmp_path / "dask" / "manifest.json").read_text()
    _same_results(serial, dask)

    flags = [pd.read_parquet(tmp_path / kind / "samples.parquet") for kind in ("serial", "loky", "dask")]
    pd.testing.assert_frame_equal(flags[0], flags[1])
    pd.testing.assert_frame_equal(flags[0], flags[2])


def test_threading_backend_from_the_suite_gives_identical_results(tmp_path: Path) -> None:
    small = {**SUITE, "attacks": ["fgsm"], "n_jobs": 2, "backend": "threading"}
    threaded = tmp_path / "threaded.yaml"
    threaded.write_text(yaml.safe_dump(small))
    serial = tmp_path / "serial.yaml"
    serial.write_text(yaml.safe_dump({**small, "n_jobs": 1, "backend": "loky"}))
    _same_results(_run(serial, tmp_path / "a"), _run(threaded, tmp_path / "b", "--exact-workers"))


def test_backend_does_not_change_the_suite_digest() -> None:
    from bench.suite import validate

    local = validate(dict(SUITE))
    cluster = validate({**SUITE, "backend": "dask", "scheduler": "tcp://10.0.0.1:8786"})
    assert local.digest == cluster.digest
    assert validate({**SUITE, "seed": 4}).digest != local.digest


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--backend", "dask"], "backend: dask needs a scheduler address"),
        (["--backend", "ray"], "backend: 'ray' is not allowed (allowed: loky, threading, dask)"),
        (["--scheduler", "tcp://127.0.0.1:1"], "is only used with backend: dask"),
    ],
)
def test_bad_backend_options_are_refused_with_the_allowed_values(
    suite_file: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    result = CliRunner().invoke(app, ["run", str(suite_file), "--out", str(tmp_path / "r"), "--no-mlflow", *args])
    assert result.exit_code == 2
    assert message in result.output.replace("\n", " ")


def test_suite_backend_field_lists_allowed_values(tmp_path: Path) -> None:
    from bench.suite import SuiteError, load_suite

    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**SUITE, "backend": "spark"}))
    with pytest.raises(SuiteError, match=r"bad.yaml: backend: allowed values are 'loky', 'threading' or 'dask'"):
        load_suite(path)


def test_n_jobs_measures_the_models_and_runs_serially_when_workers_would_not_pay(
    suite_file: Path, tmp_path: Path
) -> None:
    """Without --exact-workers a local CPU run predicts the gain of its workers from the suite's models."""
    from bench.engine.parallel import required_gain

    planned = _run(suite_file, tmp_path / "auto", "--n-jobs", "2")
    workers = json.loads((tmp_path / "auto" / "manifest.json").read_text())["workers"]
    assert workers["requested_n_jobs"] == 2 and workers["predicted_gain"] > 0
    if workers["predicted_gain"] < required_gain(2):  # whichever way this machine decides, it says so and obeys it
        assert workers["n_jobs"] == 1 and "cells run serially" in workers["reason"]
    else:
        assert workers["n_jobs"] == 2 and workers["threads_per_worker"] >= 1
    _same_results(_run(suite_file, tmp_path / "serial"), planned)


def test_choose_workers_follows_the_prediction_and_never_measures_what_it_need_not() -> None:
    import torch

    from bench.engine.parallel import choose_workers, required_gain

    cpu, asked = torch.device("cpu"), []

    def measure(workers: int) -> float:
        asked.append(workers)
        return gain

    gain = required_gain(2) - 0.01
    plan = choose_workers("loky", 2, cells=5, device=cpu, measure=measure)
    assert (plan.n_jobs, plan.threads, plan.requested) == (1, 0, 2) and asked == [2]
    gain = required_gain(2) + 0.1
    plan = choose_workers("loky", 2, cells=5, device=cpu, measure=measure)
    assert plan.n_jobs == 2 and plan.threads >= 1 and plan.predicted_gain == gain
    asked.clear()
    for backend, n_jobs, cells, exact, device in (
        ("loky", 1, 5, False, cpu),  # serial asked
        ("loky", 2, 1, False, cpu),  # one cell: runs here with every core anyway
        ("loky", 2, 5, True, cpu),  # --exact-workers
        ("loky", 2, 5, False, torch.device("meta")),  # not a CPU: workers share one accelerator
    ):
        plan = choose_workers(backend, n_jobs, cells=cells, device=device, measure=measure, exact=exact)
        assert plan.predicted_gain is None
    assert asked == []

    def broken(workers: int) -> float:
        raise RuntimeError("this model has no backward pass")

    plan = choose_workers("loky", 2, cells=5, device=cpu, measure=broken)
    assert plan.n_jobs == 2 and plan.predicted_gain is None and "no backward pass" in plan.reason


def test_predicted_gain_times_real_passes_and_restores_the_thread_count() -> None:
    import torch
    from torch import nn

    from bench.engine.parallel import predicted_gain

    torch.manual_seed(0)
    small = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10)).eval()
    before = torch.get_num_threads()
    x, y = torch.rand(32, 1, 8, 8), torch.randint(0, 10, (32,))
    gain = predicted_gain({"small": (small, 3)}, x, y, workers=2)
    assert torch.get_num_threads() == before
    assert 0.2 < gain < 10  # a ratio of two timings of the same passes, not a placeholder
