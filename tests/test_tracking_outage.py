"""Tracking outages against a real ``mlflow server`` that this test starts, stops and restarts.

1. The server is stopped while the cells of a ``bench run`` (a subprocess)
   are running: the suite completes into its run directory with a warning
   naming ``bench sync``; after a restart on the same backend store,
   ``bench sync`` mirrors it, and a second ``bench sync`` creates nothing.
2. The server is killed (SIGKILL) half-way through a ``bench sync``: the
   parent run is left without ``bench.sync_complete``; the next sync deletes
   that partial mirror and redoes it whole.

1 needs cells that outlast a server restart (``slow``); 2 runs by default, on the
session's server (``killable_mlflow_server`` restarts it if the test leaves it dead).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import MlflowServer
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from bench.cli import app
from bench.tracking import COMPLETE_TAG, UID_TAG

pytestmark = pytest.mark.mlflow_server

TESTS = Path(__file__).resolve().parent
EXPERIMENT = "outage-test"


def _env(uri: str) -> dict[str, str]:
    return {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _kill(server: MlflowServer) -> None:
    """SIGKILL the server's process group: an outage, not a graceful shutdown."""
    assert server.proc is not None
    os.killpg(server.proc.pid, signal.SIGKILL)
    server.proc.wait()


def _parents(client: MlflowClient, uid: str, view: int = ViewType.ACTIVE_ONLY) -> list:
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], filter_string=f"tags.`{UID_TAG}` = '{uid}'", run_view_type=view)


def _children(client: MlflowClient, parent_id: str) -> list:
    exp = client.get_experiment_by_name(EXPERIMENT)
    return client.search_runs([exp.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'")


def _suite(path: Path, attacks: str, n: int) -> Path:
    path.write_text(
        f"name: outage\ndataset: {{name: digits, n: {n}}}\n"
        "models: [{name: lin, factory: 'plugins:logits'}, {name: lin2, factory: 'plugins:logits'}]\n"
        f"attacks: {attacks}\nepsilons: [0, 0.05, 0.1, 0.2]\n"
        f"tracking: {{experiment: {EXPERIMENT}, examples: 4}}\n"
    )
    return path


@pytest.mark.slow
def test_server_stopped_mid_run_then_sync_is_idempotent(tmp_path: Path) -> None:
    server = MlflowServer(tmp_path)
    server.start()
    try:
        # PGD without early exit keeps the cells busy for seconds: long enough to stop the server meanwhile.
        slow = "[{name: pgd, params: {steps: 200, early_stop: false}}, {name: pgd, label: pgd2, params: {steps: 200}}]"
        suite = _suite(tmp_path / "suite.yaml", slow, n=300)
        run = tmp_path / "run"
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.cli", "run", str(suite), "--out", str(run)],
            env=_env(server.uri),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        _wait_for(lambda: (run / "models.json").exists() or proc.poll() is not None, 120, "models to be prepared")
        stopped_while_running = not (run / "results.csv").exists()
        _kill(server)
        out, errout = proc.communicate(timeout=300)
        assert proc.returncode == 0, errout
        assert stopped_while_running, "the run finished before the server was stopped: make the cells slower"
        text = " ".join(errout.split())
        assert "warning: MLflow tracking failed" in text and f"bench sync {run}" in text, errout
        assert "Traceback" not in out + errout
        assert json.loads((run / "manifest.json").read_text())["status"] == "finished"
        assert (run / "results.csv").is_file()

        server.start()  # same backend store and artifact root
        client = MlflowClient(tracking_uri=server.uri)
        uid = json.loads((run / "manifest.json").read_text())["run_uid"]
        assert _parents(client, uid) == []
        for attempt in range(2):
            result = CliRunner().invoke(app, ["sync", str(run)], env={"MLFLOW_TRACKING_URI": server.uri})
            assert result.exit_code == 0, result.output
            (parent,) = _parents(client, uid, ViewType.ALL)  # one parent ever, also after the second sync
            assert parent.info.run_id in result.output and parent.data.tags[COMPLETE_TAG] == "true"
            children = _children(client, parent.info.run_id)
            assert sorted(c.info.run_name for c in children) == ["lin · pgd", "lin · pgd2", "lin2 · pgd", "lin2 · pgd2"]
            if attempt == 0:
                first_id = parent.info.run_id
        assert parent.info.run_id == first_id
    finally:
        server.stop()


def test_sync_interrupted_half_way_is_redone_whole(tmp_path: Path, killable_mlflow_server: MlflowServer) -> None:
    attacks = "[" + ", ".join(f"{{name: fgsm, label: f{i}}}" for i in range(6)) + "]"
    suite = _suite(tmp_path / "suite.yaml", attacks, n=40)
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", str(suite), "--no-mlflow", "--out", str(run)])
    assert result.exit_code == 0, result.output
    uid = json.loads((run / "manifest.json").read_text())["run_uid"]
    cells = sorted(f"{m} · f{i}" for m in ("lin", "lin2") for i in range(6))

    server = killable_mlflow_server
    client = MlflowClient(tracking_uri=server.uri)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.cli", "sync", str(run)],
        env=_env(server.uri),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Kill the server as soon as the parent run exists, while the nested runs are being logged.
    _wait_for(lambda: bool(_parents(client, uid)) or proc.poll() is not None, 120, "the parent run")
    _kill(server)
    out, errout = proc.communicate(timeout=300)
    assert proc.returncode == 1, out + errout
    assert "MLflow tracking failed" in errout and "Traceback" not in out + errout

    server.start()
    (partial,) = _parents(client, uid)
    assert COMPLETE_TAG not in partial.data.tags  # the interrupted mirror is recognisably incomplete
    assert len(_children(client, partial.info.run_id)) < len(cells)

    result = CliRunner().invoke(app, ["sync", str(run)], env={"MLFLOW_TRACKING_URI": server.uri})
    assert result.exit_code == 0, result.output
    (parent,) = _parents(client, uid)
    assert parent.info.run_id != partial.info.run_id and parent.data.tags[COMPLETE_TAG] == "true"
    assert sorted(c.info.run_name for c in _children(client, parent.info.run_id)) == cells
    assert client.get_run(partial.info.run_id).info.lifecycle_stage == "deleted"

    again = CliRunner().invoke(app, ["sync", str(run)], env={"MLFLOW_TRACKING_URI": server.uri})
    assert again.exit_code == 0 and parent.info.run_id in again.output
    assert len(_parents(client, uid)) == 1 and len(_parents(client, uid, ViewType.ALL)) == 2
