"""Shared fixtures: an isolated checkpoint cache, a real MLflow server, trained models."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import torch

from bench.runstate import RESULT_FILES, sha256_file

REPO = Path(__file__).resolve().parent.parent
SUITES = REPO / "suites"


@pytest.fixture(scope="session", autouse=True)
def _isolated_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Checkpoints and MLflow writes of the test session go to temporary folders.

    Set ``BENCH_TEST_CACHE`` to keep trained test models between sessions.
    """
    saved = {k: os.environ.get(k) for k in ("BENCH_CACHE", "MLFLOW_TRACKING_URI", "BENCH_TRUSTED_MODULES")}
    os.environ["BENCH_TRUSTED_MODULES"] = "plugins"  # suites in tmp folders name tests/plugins.py's factories
    os.environ["BENCH_CACHE"] = os.environ.get("BENCH_TEST_CACHE") or str(tmp_path_factory.mktemp("bench-cache"))
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path_factory.mktemp('mlflow-local')}/mlflow.db"
    torch.manual_seed(0)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MlflowServer:
    """A real ``mlflow server`` on 127.0.0.1 (started once per test session, stopped by PID)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = _free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120.0) -> None:
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        env.pop("MLFLOW_TRACKING_URI", None)
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "mlflow", "server",
                "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
                "--backend-store-uri", f"sqlite:///{self.root}/mlflow.db",
                "--artifacts-destination", str(self.root / "artifacts"),
            ],
            cwd=self.root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {(self.root / 'server.log').read_text()[-2000:]}")
            try:
                if requests.get(self.uri + "/health", timeout=2).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"mlflow server did not start in {timeout} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def killable_mlflow_server(mlflow_server: MlflowServer) -> Iterator[MlflowServer]:
    """The session's server, for a test that kills it (an outage) and restarts it on the same store and port.

    Reusing it saves a server start; if the test leaves it dead, it is restarted for the tests after it.
    """
    yield mlflow_server
    if mlflow_server.proc is None or mlflow_server.proc.poll() is not None:
        mlflow_server.start()


@pytest.fixture
def mlflow_uri(mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """``MLFLOW_TRACKING_URI`` pointed at the session's real server for one test."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    return mlflow_server.uri


SHORT_CROWN = {"epochs": 20, "lr": 0.005, "adv_ramp_epochs": 10, "adv_eps": 0.1}
"""lenet_crown's CROWN-IBP recipe shortened for the 1,437 training digits of ``digits`` (about 6 s)."""


def trained(name: str, dataset: str = "digits", **recipe: object) -> torch.nn.Module:
    """A zoo model trained (once per session, then cached) on ``dataset``'s train split."""
    from bench.data import load_dataset
    from model_zoo import get_model

    return get_model(name, dataset, train=load_dataset(dataset, "train"), recipe=dict(recipe) or None).model


@pytest.fixture(scope="session")
def digits_test():
    from bench.data import load_dataset

    return load_dataset("digits", "test")


@pytest.fixture(scope="session")
def mnist_test():
    from bench.data import load_dataset

    return load_dataset("mnist5k", "test")


@pytest.fixture(scope="session")
def lenet_digits() -> torch.nn.Module:
    return trained("lenet", "digits")


@pytest.fixture(scope="session")
def lenet_mnist() -> torch.nn.Module:
    """LeNet trained with its zoo recipe on mnist5k (about 5 s on 2 cores)."""
    return trained("lenet", "mnist5k")


@pytest.fixture(scope="session")
def mlp_mnist() -> torch.nn.Module:
    return trained("mlp", "mnist5k")


@pytest.fixture(scope="session")
def report_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run directory (with its report): mlp and lenet on 120 digits, FGSM untargeted and targeted."""
    from bench.engine import run_suite
    from bench.suite import validate

    suite = validate(
        {
            "name": "report-test",
            "dataset": {"name": "digits", "n": 120},
            "models": ["mlp", "lenet"],
            "attacks": ["fgsm", {"name": "fgsm", "label": "fgsm_t", "params": {"targeted": True}}],
            "epsilons": [0, 0.05, 0.1, 0.2, 0.3],
            "tracking": {"enabled": False, "examples": 4},
        }
    )
    out = tmp_path_factory.mktemp("report-run") / "run"
    run_suite(suite, out=out, track=False, echo=None)
    return out


@pytest.fixture(scope="session")
def report_dir(report_run: Path) -> Path:
    """The report ``bench run`` rendered into the run directory of :func:`report_run`."""
    return report_run / "report"


def record_results(run: Path) -> None:
    """After a test plants results into a run directory: record their digests in its manifest, as a run would
    (so the planted numbers stand for a run that produced them, not for an edited run; bench/runtrust.py).
    Only the result files present are recorded (a test may remove one, as an MLflow download lacks one)."""
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["results_sha256"] = {n: sha256_file(run / n) for n in RESULT_FILES if (run / n).exists()}
    (run / "manifest.json").write_text(json.dumps(manifest))
