"""States that tell the truth (issue #17, item 6).

* the manifest says ``finished`` only once results, figures and report exist; a report that cannot be
  written is a non-zero exit (1) naming ``--resume``, and ``--resume`` completes the run without rerunning cells;
* ``bench sync`` tells "run not finished" (exit 2) from "MLflow failed" (exit 1), and refuses results that do
  not match the sha256 recorded at finish (a copied run directory with changed results is not the original);
* two processes on one empty checkpoint cache train a model once: the second waits for the lock, then loads.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

import bench.cli.run
import bench.cli.sync  # noqa: F401  (registers `bench sync`)
from bench.cli import app

SUITE = """
name: states
seed: 0
dataset: {name: digits, split: test, n: 40}
models: [mlp]
attacks: [fgsm]
epsilons: [0, 0.1]
batch_size: 40
tracking: {experiment: states-test, examples: 2}
"""

RESULT_FILES = ("results.csv", "results.parquet", "samples.parquet")
REPO = Path(__file__).resolve().parent.parent


def _bench(*args: str, env: dict[str, str] | None = None):
    result = CliRunner().invoke(app, list(args), env=env)
    assert "Traceback" not in result.output, result.output
    return result


def _manifest(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text())


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def suite_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("states") / "states.yaml"
    path.write_text(SUITE)
    return path


@pytest.fixture(scope="module")
def finished_run(suite_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("finished") / "run"
    result = _bench("run", str(suite_file), "--out", str(run), "--no-mlflow")
    assert result.exit_code == 0, result.output
    return run


def _one_line(text: str) -> str:
    return " ".join(text.split())


def test_finished_manifest_records_the_results_sha256(finished_run: Path) -> None:
    manifest = _manifest(finished_run)
    assert manifest["status"] == "finished"
    assert (finished_run / "report" / "report.html").is_file() and (finished_run / "figures").is_dir()
    assert manifest["results_sha256"] == {name: _sha(finished_run / name) for name in RESULT_FILES}
    assert "error" not in manifest


def test_failed_report_exits_1_and_resume_completes_it_without_rerunning_cells(
    suite_file: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "report").write_text("a file where the report folder goes")  # the report cannot be written
    result = _bench("run", str(suite_file), "--out", str(run), "--no-mlflow")
    assert result.exit_code == 1, result.output
    text = _one_line(result.output)
    assert f"--resume {run}" in text and "report" in text and "incomplete" in text, text
    manifest = _manifest(run)
    assert manifest["status"] == "incomplete"  # never "finished" without a report
    assert manifest["error"].startswith("report: ")
    assert manifest["results_sha256"] == {name: _sha(run / name) for name in RESULT_FILES}
    assert not (run / "report").is_dir()

    # bench sync says "not finished" (bad input, exit 2) and how to complete it, before asking MLflow anything.
    synced = _bench("sync", str(run), env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"})
    assert synced.exit_code == 2, synced.output
    assert "has not finished" in synced.output and "MLflow tracking failed" not in synced.output
    assert f"--resume {run}" in _one_line(synced.output)

    (run / "report").unlink()
    done = {p: p.stat().st_mtime_ns for p in (run / "cells").glob("*/done.json")}
    results_before = (run / "results.csv").read_bytes()
    again = _bench("run", str(suite_file), "--resume", str(run), "--no-mlflow")
    assert again.exit_code == 0, again.output
    assert "running 0 cell(s)" in again.output
    assert done and {p: p.stat().st_mtime_ns for p in done} == done  # no cell was rerun
    assert (run / "results.csv").read_bytes() == results_before
    assert (run / "report" / "report.html").is_file() and (run / "report" / "report.md").is_file()
    manifest = _manifest(run)
    assert manifest["status"] == "finished" and "error" not in manifest


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_sync_tells_not_finished_from_mlflow_failed(finished_run: Path, tmp_path: Path, mlflow_uri: str) -> None:
    running = tmp_path / "running"
    shutil.copytree(finished_run, running)
    manifest = _manifest(running)
    manifest["status"] = "running"  # what a run still evaluating its cells (or killed then) leaves
    (running / "manifest.json").write_text(json.dumps(manifest))
    result = _bench("sync", str(running), env={"MLFLOW_TRACKING_URI": mlflow_uri})  # MLflow is fine
    assert result.exit_code == 2, result.output
    text = _one_line(result.output)
    assert "has not finished" in text and "status 'running'" in text and f"--resume {running}" in text, text
    assert "MLflow tracking failed" not in text

    down = _bench("sync", str(finished_run), env={"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{_closed_port()}"})
    assert down.exit_code == 1, down.output
    assert "MLflow tracking failed" in down.output


def test_sync_refuses_results_changed_after_the_run(finished_run: Path, tmp_path: Path, mlflow_uri: str) -> None:
    from mlflow.tracking import MlflowClient  # heavy optional (about 1 s)

    env = {"MLFLOW_TRACKING_URI": mlflow_uri}
    original = _bench("sync", str(finished_run), env=env)
    assert original.exit_code == 0, original.output
    (parent_id,) = {w for w in original.output.split() if len(w) == 32 and all(c in "0123456789abcdef" for c in w)}
    digest = MlflowClient(mlflow_uri).get_run(parent_id).data.tags["bench.results_digest"]
    assert len(digest) == 16

    same = tmp_path / "same"  # an unchanged copy is the same run: it syncs as the original (idempotent)
    shutil.copytree(finished_run, same)
    assert parent_id in _bench("sync", str(same), env=env).output

    changed = tmp_path / "changed"
    shutil.copytree(finished_run, changed)
    csv = changed / "results.csv"
    csv.write_text(csv.read_text().replace(",0.1,", ",0.1000001,", 1))
    result = _bench("sync", str(changed), env=env)
    assert result.exit_code == 2, result.output
    text = _one_line(result.output)
    assert f"{csv}: its sha256" in text and "changed after the run" in text, text
    assert parent_id not in text

    # Changed results with the manifest's digests forged to match: still not the original's MLflow run.
    manifest = _manifest(changed)
    manifest["results_sha256"] = {name: _sha(changed / name) for name in RESULT_FILES}
    (changed / "manifest.json").write_text(json.dumps(manifest))
    forged = _bench("sync", str(changed), env=env)
    assert forged.exit_code == 2, forged.output
    assert "mirrored already" in forged.output and "with other results" in forged.output

    old = tmp_path / "old"  # a run directory written before digests were recorded: refused, with the way out
    shutil.copytree(finished_run, old)
    manifest = _manifest(old)
    del manifest["results_sha256"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    legacy = _bench("sync", str(old), env=env)
    assert legacy.exit_code == 2 and "results_sha256" in legacy.output and "--resume" in legacy.output


TRAIN_ONCE = textwrap.dedent(
    """
    import hashlib, json, logging, sys, time
    from pathlib import Path

    import torch

    from bench.data import load_dataset
    from model_zoo import get_model

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    barrier, me = Path(sys.argv[1]), sys.argv[2]
    train = load_dataset("digits", "train")
    (barrier / f"ready-{me}").touch()
    while len(list(barrier.glob("ready-*"))) < 2:  # start both get_model calls at the same moment
        time.sleep(0.002)
    got = get_model("mlp", "digits", train=train, seed=0, recipe={"epochs": 8})
    weights = b"".join(v.numpy().tobytes() for v in got.model.state_dict().values())
    print(json.dumps({"trained_now": got.trained_now, "weights": hashlib.sha256(weights).hexdigest()}))
    """
)


def test_two_processes_on_one_empty_cache_train_a_model_once(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    script = tmp_path / "train_once.py"
    script.write_text(TRAIN_ONCE)
    # This checkout's code (not whichever one is installed), one thread each: two trainings share the cores.
    env = {**os.environ, "BENCH_CACHE": str(cache), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(barrier), str(i)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=180) for p in procs]
    for proc, (_, errout) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, errout
    reports = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert sorted(r["trained_now"] for r in reports) == [False, True], reports  # one trained, one loaded
    assert reports[0]["weights"] == reports[1]["weights"]
    waited = next(errout for (_, errout), r in zip(outs, reports, strict=True) if not r["trained_now"])
    trained = next(errout for (_, errout), r in zip(outs, reports, strict=True) if r["trained_now"])
    assert "waiting for another process training 'mlp' on 'digits'" in waited and "loaded mlp" in waited
    assert "trained mlp on digits" in trained
    assert len(list((cache / "models").glob("mlp-digits-*.pt"))) == 1
