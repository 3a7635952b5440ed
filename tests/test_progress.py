"""Live progress (bench/progress.py): plain lines in a log with counts, cell names and times; none with --quiet.

The run goes through the real ``bench`` command in a subprocess with stdout and
stderr piped (not a terminal), as in a CI log. The suite trains one tiny model
with a fresh recipe (so the epoch lines show) and runs two cells serially
(so the per-eps steps show too, with BENCH_PROGRESS_INTERVAL=0).
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench import progress

SUITE = """
name: progress
seed: 0
dataset: {name: digits, split: test, n: 60}
models: [{name: mlp, recipe: {epochs: 2}}]
attacks: [fgsm, {name: fgsm, label: fgsm_l2, params: {norm: l2}, epsilons: [0, 0.5], n: 20}]
epsilons: [0, 0.1, 0.2]
batch_size: 30
n_jobs: 1
"""


def _bench(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    suite = tmp_path / "progress.yaml"
    suite.write_text(SUITE)
    env = {**os.environ, "BENCH_PROGRESS_INTERVAL": "0"}
    return subprocess.run(
        [sys.executable, "-m", "bench.cli", "run", str(suite), "--no-mlflow", "--out", str(tmp_path / "run"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )


@pytest.fixture(scope="module")
def piped(tmp_path_factory: pytest.TempPathFactory) -> subprocess.CompletedProcess[str]:
    return _bench(tmp_path_factory.mktemp("progress"))


def test_piped_run_prints_cell_counts_and_times(piped: subprocess.CompletedProcess[str]) -> None:
    assert piped.returncode == 0, piped.stderr
    log = piped.stderr
    assert re.search(
        r"^\[1/2\] done mlp__fgsm in \d+\.\ds \(60/80 samples x attacks; elapsed \d+:\d\d, ETA", log, re.M
    ), log
    assert re.search(
        r"^\[2/2\] done mlp__fgsm_l2 in \d+\.\ds \(80/80 samples x attacks; elapsed \d+:\d\d\)$", log, re.M
    )


def test_piped_run_prints_eps_steps_in_serial_mode(piped: subprocess.CompletedProcess[str]) -> None:
    assert re.search(r"mlp__fgsm: eps 3/3 \(0\.2\), samples 60/60", piped.stderr), piped.stderr


def test_quiet_prints_no_progress(tmp_path: Path) -> None:
    quiet = _bench(tmp_path, "--quiet")
    assert quiet.returncode == 0, quiet.stderr
    assert "done mlp__fgsm" not in quiet.stderr + quiet.stdout
    assert not re.search(r"\[\d+/\d+\]|epoch \d|eps \d/", quiet.stderr + quiet.stdout)
    assert "robust accuracy" in quiet.stdout  # the results still print


def test_training_epochs_show_in_a_log() -> None:
    stream = io.StringIO()
    with progress.active(progress.Progress(stream=stream, tty=False, interval=3600)):
        for epoch in (1, 2, 3):
            progress.epoch_done("train mlp", epoch, 3, 0.5 / epoch, 0.8)
    lines = stream.getvalue().splitlines()
    # rate-limited: the first step prints (nothing printed yet), the middle one not, the last epoch always
    assert lines == [
        "[prep] train mlp: epoch 1/3 loss 0.5000 train accuracy 0.800 (elapsed 0:00)",
        "[prep] train mlp: epoch 3/3 loss 0.1667 train accuracy 0.800 (elapsed 0:00)",
    ]


def test_no_reporter_no_output(capsys: pytest.CaptureFixture[str]) -> None:
    progress.cells(3, 10)
    progress.cell_done("a__b", 1.0)
    progress.epoch_done("train x", 1, 1, 0.1, 0.9)
    assert capsys.readouterr() == ("", "")


PROSE = ("run directory", "leaderboard", "reference weights", "RETRAINED weights", "external weights")
"""Lines of prose (wrapped by the log viewer), not table rows that must fit 80 columns."""


def test_piped_tables_leaderboard_first_one_table_per_norm_narrow(piped: subprocess.CompletedProcess[str]) -> None:
    out = piped.stdout
    titles = [line for line in out.splitlines() if line.endswith(":")]
    assert titles[0].startswith("leaderboard (worst case over attacks")
    assert titles[1:] == [f"robust accuracy: progress (60 samples; fgsm_l2: 20), {norm}:" for norm in ("linf", "l2")]
    header = out.splitlines()[out.splitlines().index(titles[0]) + 1].split()
    assert header == ["model", "clean", "linf", "@0.1", "AUC", "linf", "l2", "@1", "AUC", "l2"]
    l2_block = out.split(titles[2])[1].splitlines()
    assert l2_block[1].split() == ["model", "attack", "clean", "0", "0.5", "AUC"]  # only the l2 grid
    assert re.match(r"^mlp\s+fgsm_l2\s+\d\.\d\d\s+\d\.\d\d\s+\d\.\d\d\s+\d\.\d\d$", l2_block[2])  # narrow: 2 decimals
    assert max(len(line) for line in out.splitlines() if not line.startswith(PROSE)) <= 80
