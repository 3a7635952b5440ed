"""The drawing process (reports.drawing): the same PNGs as drawing here, errors raised here, a dead helper survived."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from bench.cli import _draws
from bench.engine import run_suite
from bench.rundir import RunDir
from bench.suite import validate
from bench.tracking import mirror, time_sync_into_fresh_store
from reports import drawing
from reports import figures as figs
from reports.overview import comparison_png
from reports.render import render_run_dir

SUITE = {
    "name": "drawing-test",
    "dataset": {"name": "digits", "n": 120},
    "models": ["mlp", "lenet"],
    "attacks": ["fgsm", {"name": "pgd", "params": {"steps": 3}}],
    "epsilons": [0, 0.05, 0.1, 0.2, 0.3],
    "crosscheck": False,
    "tracking": {"enabled": False, "examples": 4},
}


@pytest.fixture
def helper(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A running drawing process (even on a one-core machine), stopped afterwards."""
    monkeypatch.delenv(drawing.ENV, raising=False)
    assert drawing.start(min_cores=1)
    try:
        yield
    finally:
        drawing.stop()


def _inline() -> None:
    drawing.stop()
    assert not drawing.running()


@pytest.fixture(scope="module")
def results(report_run: Path) -> pd.DataFrame:
    return RunDir(report_run).read_results()


def test_figures_drawn_by_the_helper_are_those_drawn_here(helper: None, results: pd.DataFrame) -> None:
    assert drawing.submit(os.getpid).result() != os.getpid()  # really another process
    grid = results[results["eps"] == 0.1].pivot_table(index="model", columns="attack", values="robust_accuracy")
    cells = [(rows.sort_values("eps"), f"{m} · {a}") for (m, a), rows in results.groupby(["model", "attack"])]
    # an L2 cell on another axis: the painter makes new ticks for it, under whatever theme is set then
    cells.append((cells[0][0].assign(eps=cells[0][0]["eps"] * 10, norm="l2"), "mlp · l2"))
    jobs = {
        "curves": (figs.attack_curves, (results,), {}),
        "heatmap": (figs.heatmap_png, (grid,), {"title": "robust accuracy at linf eps 0.1"}),
        "first cells": (figs.curve_pngs, (cells[:2],), {"keep": True}),
        # a heatmap between two batches of kept-painter curves changes the theme: the painter puts it back
        "heatmap again": (figs.heatmap_png, (grid,), {}),
        "last cells": (figs.curve_pngs, (cells[2:],), {"keep": True}),
        "comparison": (comparison_png, (results,), {"title": "t", "norms": ["linf", "l2"]}),
    }
    there = {name: drawing.submit(fn, *args, **kwargs) for name, (fn, args, kwargs) in jobs.items()}
    there_pngs = {name: pending.result() for name, pending in there.items()}
    _inline()
    # here: a fresh painter per batch (keep=False), as a sync without the helper draws them, and in the
    # reverse order, so that no figure relies on the theme the one before it left
    here = {
        name: fn(*args, **{k: v for k, v in kw.items() if k != "keep"})
        for name, (fn, args, kw) in reversed(jobs.items())
    }
    assert set(there_pngs["curves"]) == {"fgsm", "fgsm_t"}  # report_run's attacks
    for name in jobs:
        assert there_pngs[name] == here[name], name


def test_a_run_with_the_helper_writes_what_a_run_without_it_writes(helper: None, tmp_path: Path) -> None:
    suite = validate(SUITE)
    with_helper = run_suite(suite, out=tmp_path / "helper", track=False, echo=None).run_dir.root
    _inline()
    without = run_suite(suite, out=tmp_path / "inline", track=False, echo=None).run_dir.root
    for folder in ("figures", "report/figures"):
        names = sorted(p.name for p in (without / folder).glob("*.png"))
        assert names and names == sorted(p.name for p in (with_helper / folder).glob("*.png"))
        for name in names:
            assert (with_helper / folder / name).read_bytes() == (without / folder / name).read_bytes(), name
    columns = [c for c in pd.read_csv(without / "results.csv").columns if c != "seconds"]
    assert pd.read_csv(with_helper / "results.csv")[columns].equals(pd.read_csv(without / "results.csv")[columns])


def test_bench_report_with_the_helper_is_byte_identical(helper: None, report_run: Path, tmp_path: Path) -> None:
    render_run_dir(report_run, tmp_path / "helper")
    _inline()
    render_run_dir(report_run, tmp_path / "inline")
    names = sorted(p.name for p in (tmp_path / "inline" / "figures").glob("*.png"))
    assert len(names) == 11
    for name in names:
        helper_png, inline_png = ((tmp_path / mode / "figures" / name).read_bytes() for mode in ("helper", "inline"))
        assert helper_png == inline_png, name
    dated = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC")
    for page in ("report.md", "report.html"):
        a, b = ((tmp_path / mode / page).read_text() for mode in ("helper", "inline"))
        assert dated.sub("", a) == dated.sub("", b), page


def test_mlflow_figures_drawn_by_the_helper_are_those_drawn_here(
    helper: None, report_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mirror, "CELL_CURVE_BATCH", 3)  # 4 cells: two batches, each cell's curve picked out of one
    stores = {"helper": tmp_path / "helper", "inline": tmp_path / "inline"}
    for mode, store in stores.items():
        if mode == "inline":
            _inline()
        store.mkdir()
        time_sync_into_fresh_store(report_run, store)
    logged: dict[str, dict[str, bytes]] = {}
    for mode, store in stores.items():
        client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
        files = {}
        for run in runs:
            name = "comparison.png" if "mlflow.parentRunId" not in run.data.tags else "robust_accuracy_curve.png"
            path = client.download_artifacts(run.info.run_id, name, str(tmp_path / mode / run.info.run_id))
            files[run.info.run_name if name != "comparison.png" else "parent"] = Path(path).read_bytes()
        logged[mode] = files
    assert len(logged["inline"]) == 5  # the parent and 4 cells
    assert logged["helper"].keys() == logged["inline"].keys()
    for name, png in logged["inline"].items():
        assert logged["helper"][name] == png, name


def test_an_error_while_drawing_is_raised_here(helper: None) -> None:
    bad = pd.DataFrame([["not a number"]], index=["m"], columns=["a"])
    pending = drawing.submit(figs.heatmap_png, bad)
    with pytest.raises(ValueError, match="could not convert string to float"):
        pending.result()
    assert drawing.running()  # the helper survives a figure's error
    _inline()
    with pytest.raises(ValueError, match="could not convert string to float"):
        drawing.submit(figs.heatmap_png, bad)


def test_a_killed_helper_leaves_the_figures_to_this_process(helper: None, results: pd.DataFrame) -> None:
    pid = drawing.submit(os.getpid).result()
    in_flight = drawing.submit(figs.attack_curves, results)
    os.kill(pid, signal.SIGKILL)
    after = drawing.submit(figs.attack_curves, results)
    expected = figs.attack_curves(results)
    assert in_flight.result() == expected  # in the helper before the kill, or redrawn here
    assert after.result() == expected
    assert drawing.submit(os.getpid).result() == os.getpid()
    assert not drawing.running()


def test_switched_off_and_single_core(monkeypatch: pytest.MonkeyPatch) -> None:
    _inline()
    monkeypatch.setenv(drawing.ENV, "0")
    assert not drawing.start(min_cores=1)
    assert drawing.submit(os.getpid).result() == os.getpid()
    monkeypatch.delenv(drawing.ENV)
    assert not drawing.start(min_cores=10_000)  # fewer cores than that: drawing here is as fast
    assert not drawing.running()


def test_the_commands_that_draw_start_the_helper() -> None:
    assert _draws(["run", "suites/quickstart.yaml"])
    assert _draws(["--debug", "report", "runs/x"])
    assert _draws(["sync", "runs/x"]) and _draws(["perf", "--no-micro"])
    assert not _draws(["run", "--help"]) and not _draws(["report", "-h"])
    assert not _draws(["validate", "suites/quickstart.yaml"]) and not _draws(["check", "b.json", "runs/x"])
    assert not _draws([]) and not _draws(["--version"])


HELPER_SCRIPT = """
import faulthandler, os, signal, sys, time
faulthandler.dump_traceback_later(25)  # a hang shows its threads' stacks in the test's failure message
# Ctrl-C raises KeyboardInterrupt, as in a terminal's foreground job, even when the tests run where
# SIGINT is ignored (a background job of a non-interactive shell: its children inherit SIG_IGN).
signal.signal(signal.SIGINT, signal.default_int_handler)
from reports import drawing
assert drawing.start(min_cores=1)
try:
    print(drawing.submit(os.getpid).result(), flush=True)
    time.sleep(120)
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""


def _stat(pid: int) -> list[str]:
    """The fields of ``/proc/PID/stat`` after the command name: state, parent pid, ... (``OSError`` once gone)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _running(pid: int) -> bool:
    """Whether ``pid`` is there and not a zombie (an exited process left to its parent to reap)."""
    try:
        return _stat(pid)[0] != "Z"
    except OSError:
        return False


def _gone(pid: int, timeout: float = 10.0) -> bool:
    """Whether ``pid`` exits (or is a zombie) within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while _running(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)
    return True


def _parent_of(pid: int) -> int:
    return int(_stat(pid)[1])


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
@pytest.mark.parametrize("how", ["SIGKILL", "Ctrl-C"])
def test_the_helper_ends_with_its_command(how: str) -> None:
    """Killed, the command cannot stop its helper, which must not wait for figures forever (nor keep the
    forkserver alive); on Ctrl-C, which reaches the whole process group, the helper prints nothing."""
    env = {k: v for k, v in os.environ.items() if k != drawing.ENV}
    proc = subprocess.Popen(
        [sys.executable, "-c", HELPER_SCRIPT],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # a process group of its own, as a terminal's foreground job
    )
    assert proc.stdout is not None
    helper = int(proc.stdout.readline())
    forkserver = _parent_of(helper)
    assert helper != proc.pid and forkserver != proc.pid
    if how == "SIGKILL":
        proc.kill()
    else:
        os.killpg(proc.pid, signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        pids = {"command": proc.pid, "helper": helper, "forkserver": forkserver}
        alive = {name: _running(pid) for name, pid in pids.items()}
        with contextlib.suppress(OSError):  # the command's group holds the helper and forkserver too
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{how}: no exit within 30 s; alive then: {alive}; stdout {out!r}; stderr {err[-2000:]!r}")
    assert _gone(helper) and _gone(forkserver)
    if how == "Ctrl-C":
        assert out.strip() == "interrupted" and proc.returncode == 0
        assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
