"""MLflow's own UI over a mirrored run, opened in headless Chromium as a reviewer would.

A tiny suite is mirrored into the session's real ``mlflow server``; the experiment page (in the
"Model training" layout the printed URL selects) must list the nested runs by ``<model> · <attack>``
once the parent row is expanded, and a nested run's page must chart its per-norm curve metric.
Screenshots go to ``test-artifacts/mlflow_experiment.png`` and ``test-artifacts/mlflow_run_charts.png``.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from test_report_browser import ARTIFACTS, CHROMIUM, Chromium

from bench.engine import run_suite
from bench.suite import validate
from bench.tracking import review_links, sync_run_dir

pytestmark = [
    pytest.mark.mlflow_server,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (scripts/setup-system.sh)"),
]

SUITE = {
    "name": "ui-test",
    "description": "two models, two norms: what the MLflow UI shows a reviewer",
    "dataset": {"name": "digits", "n": 40},
    "models": ["mlp", "lenet"],
    "attacks": ["fgsm", {"name": "pgd", "label": "pgd_l2", "params": {"norm": "l2", "steps": 5}, "epsilons": [0, 1.0]}],
    "epsilons": [0, 0.05, 0.1, 0.2],
    "tracking": {"experiment": "ui-test", "examples": 2},
}
NESTED = ["mlp · fgsm", "lenet · fgsm", "mlp · pgd_l2", "lenet · pgd_l2"]
EXPAND = "[...document.querySelectorAll('button[data-component-id*=runnamecellrenderer]')].forEach(b => b.click())"
TEXT = "document.body ? document.body.innerText : ''"


@pytest.fixture(scope="module")
def mirrored(tmp_path_factory: pytest.TempPathFactory, mlflow_server) -> tuple[str, str, str]:
    """(server URI, parent run id, mlp · fgsm's run id) of the suite above, mirrored into the real server."""
    out = tmp_path_factory.mktemp("ui") / "run"
    run_suite(validate(SUITE), out=out, track=False, echo=None)
    parent = sync_run_dir(out, uri=mlflow_server.uri)
    client = MlflowClient(tracking_uri=mlflow_server.uri)
    experiment_id = client.get_run(parent).info.experiment_id
    (child,) = client.search_runs([experiment_id], filter_string="tags.model = 'mlp' and tags.attack = 'fgsm'")
    return mlflow_server.uri, parent, child.info.run_id


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Chromium]:
    chromium = Chromium(tmp_path / "profile")
    chromium.call("Page.enable")
    chromium.call("Emulation.setDeviceMetricsOverride", width=1600, height=900, deviceScaleFactor=1, mobile=False)
    yield chromium
    chromium.close()


def _wait_text(browser: Chromium, needles: list[str], timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = str(browser.evaluate(TEXT))
        if all(n in text for n in needles):
            return text
        time.sleep(0.5)
    missing = [n for n in needles if n not in text]
    raise AssertionError(f"not on the page after {timeout} s: {missing}\n--- page text ---\n{text[:3000]}")


def _shot(browser: Chromium, name: str) -> Path:
    time.sleep(1.5)  # let charts finish their entry animation
    png = base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"])
    assert png.startswith(b"\x89PNG")
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / name).write_bytes(png)
    return ARTIFACTS / name


def _close_assistant(browser: Chromium) -> None:
    """MLflow 3.17 opens its chat assistant beside every page; close it so the runs get the width."""
    browser.evaluate("[...document.querySelectorAll('button[aria-label=Close]')].forEach(b => b.click())")


def test_experiment_page_lists_nested_runs_by_name(mirrored, browser: Chromium) -> None:
    uri, parent, _ = mirrored
    command, url = review_links(parent, uri)
    assert command is None and "workflowType=machine_learning" in url
    experiment_url = url.split("/runs/")[0] + "?workflowType=machine_learning"
    browser.call("Page.navigate", url=experiment_url)
    text = _wait_text(browser, ["ui-test 20", "Model training"])
    assert "Traces" in text and "Judges" not in text  # the model-training sidebar, not the GenAI one
    assert not [n for n in NESTED if n in text]  # collapsed under the parent until expanded
    _close_assistant(browser)
    browser.evaluate(EXPAND)
    _wait_text(browser, NESTED)
    _shot(browser, "mlflow_experiment.png")


def test_nested_run_page_charts_its_norm_curve(mirrored, browser: Chromium) -> None:
    uri, _parent, child = mirrored
    _, url = review_links(child, uri)
    browser.call("Page.navigate", url=url.replace(f"/runs/{child}", f"/runs/{child}/model-metrics"))
    # tall enough for all seven charts: the page renders only the charts in view
    browser.call("Emulation.setDeviceMetricsOverride", width=1600, height=1500, deviceScaleFactor=1, mobile=False)
    _wait_text(browser, ["mlp · fgsm", "attack_success_rate_linf"])
    _close_assistant(browser)
    text = _wait_text(browser, ["robust_accuracy_linf", "robust_accuracy_auc", "clean_accuracy"])
    assert "robust_accuracy_eps_" not in text
    _shot(browser, "mlflow_run_charts.png")
