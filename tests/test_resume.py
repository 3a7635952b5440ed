"""Crash and resume: a suite killed with SIGKILL continues with --resume and gives the uninterrupted results."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from bench.engine import RunError, run_suite
from bench.rundir import RESULT_COLUMNS
from bench.suite import load_suite

# 20 epsilons make every cell take a noticeable moment, so the kill lands between cells.
EPS = ", ".join(f"{i / 60:.4f}" for i in range(20))
SUITE = f"""
name: resumable
dataset: {{name: digits, split: test, n: 160}}
models: [mlp, lenet]
attacks:
  - fgsm
  - {{name: fgsm, label: fgsm_l2, params: {{norm: l2}}}}
  - {{name: fgsm, label: fgsm_ll, params: {{targeted: true, target_mode: least_likely}}}}
epsilons: [{EPS}]
batch_size: 40
"""


def _bench(*args: str) -> list[str]:
    return [sys.executable, "-c", "from bench.cli import main; main()", *args]


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path: Path) -> None:
    suite = tmp_path / "resumable.yaml"
    suite.write_text(SUITE)
    reference = run_suite(load_suite(suite), out=tmp_path / "reference", track=False, echo=None)  # also trains
    run_dir = tmp_path / "killed"
    proc = subprocess.Popen(
        _bench("run", str(suite), "--out", str(run_dir), "--no-mlflow"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    cells = run_dir / "cells"
    while time.monotonic() < deadline:
        if cells.is_dir() and len(list(cells.glob("*/done.json"))) >= 2:
            os.killpg(proc.pid, signal.SIGKILL)
            break
        if proc.poll() is not None:
            break
        time.sleep(0.01)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    finished = len(list(cells.glob("*/done.json")))
    assert 2 <= finished < 6
    assert not (run_dir / "results.csv").exists()

    again = subprocess.run(
        _bench("run", str(suite), "--resume", str(run_dir), "--no-mlflow"), capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr
    assert f"running {6 - finished} cell(s)" in again.stderr
    resumed = pd.read_csv(run_dir / "results.csv")
    cols = [c for c in RESULT_COLUMNS if c != "seconds"]
    pd.testing.assert_frame_equal(
        reference.results[cols].reset_index(drop=True), resumed[cols].reset_index(drop=True), check_dtype=False
    )


def test_resume_refuses_another_suite_and_out_refuses_reuse(tmp_path: Path) -> None:
    suite = tmp_path / "s.yaml"
    suite.write_text(SUITE.replace(f"[{EPS}]", "[0, 0.1]").replace("[mlp, lenet]", "[mlp]"))
    run_suite(load_suite(suite), out=tmp_path / "run", track=False, echo=None)
    with pytest.raises(RunError, match=r"already holds results of a run; continue it with --resume"):
        run_suite(load_suite(suite), out=tmp_path / "run", track=False, echo=None)
    other = tmp_path / "other.yaml"
    other.write_text(suite.read_text().replace("[0, 0.1]", "[0, 0.2]"))
    with pytest.raises(RunError, match="was started from a different suite"):
        run_suite(load_suite(other), out=tmp_path / "run", track=False, echo=None, resume=True)
    with pytest.raises(RunError, match="not a run directory"):
        run_suite(load_suite(suite), out=tmp_path / "empty", track=False, echo=None, resume=True)
