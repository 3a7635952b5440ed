"""The rendered report opened in a real headless Chromium, driven through the DevTools protocol.

Asserts that every section and figure is present and rendered (embedded PNGs
decoded by the browser), that the page loads nothing from the network and logs
no console error or exception, and keeps full-page screenshots in
``test-artifacts/report.png`` and ``test-artifacts/report-comparison.png``.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

websocket = pytest.importorskip("websocket", reason="websocket-client (dev extra) drives Chromium")

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (bash scripts/setup-system.sh installs it)"
)


class Chromium:
    """A headless Chromium with one page, spoken to over a DevTools websocket."""

    def __init__(self, profile: Path) -> None:
        assert CHROMIUM is not None
        self.proc = subprocess.Popen(
            [
                CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--remote-debugging-port=0",
                "--window-size=1280,900", "about:blank",
            ],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.1)
        port = int(port_file.read_text().splitlines()[0])
        pages = requests.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
        page = next(p for p in pages if p["type"] == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=60, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))
            self.events.append(message)

    def wait_for(self, event: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == event for e in self.events):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {event} within {timeout} s")
            self.events.append(json.loads(self.ws.recv()))

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"])
        return result["result"].get("value")

    def problems(self) -> list[str]:
        """Console errors/warnings, uncaught exceptions and browser log errors (e.g. failed loads)."""
        out = []
        for e in self.events:
            method, params = e.get("method"), e.get("params", {})
            if method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                out.append(f"exception: {details.get('text')} {details.get('exception', {}).get('description')}")
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "warning", "assert"):
                out.append(f"console.{params['type']}: {[a.get('value') for a in params.get('args', [])]}")
            elif method == "Log.entryAdded" and params["entry"].get("level") in ("error", "warning"):
                out.append(
                    f"log {params['entry']['level']}: {params['entry'].get('text')} {params['entry'].get('url')}"
                )
        return out

    def close(self) -> None:
        if getattr(self, "ws", None) is not None:
            self.ws.close()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Chromium]:
    chromium = Chromium(tmp_path / "profile")
    yield chromium
    chromium.close()


PAGE_FACTS = """(() => {
  const imgs = [...document.images];
  return {
    sections: [...document.querySelectorAll('section[data-section]')].map(s => s.dataset.section),
    images: imgs.length,
    dataImages: imgs.filter(i => i.src.startsWith('data:image/png;base64,')).length,
    decoded: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
    external: [...document.querySelectorAll('[src],link[href],script')].filter(
      e => e.tagName === 'SCRIPT' || !((e.src || e.href || '').startsWith('data:'))).length,
    summaryRows: document.querySelectorAll('table.summary tbody tr').length,
    leaderboardRows: document.querySelectorAll('#run-1-leaderboard table.leaderboard tbody tr').length,
    modelSummaryRows: document.querySelectorAll('table.model-summary tbody tr').length,
    banner: [...document.querySelectorAll('[data-banner] li')].map(li => li.textContent),
    overflowing: [...document.querySelectorAll('table')].filter(t => t.getBoundingClientRect().right > 1280).length,
    flags: document.querySelectorAll('#run-1-flags .flag').length,
    title: document.title,
    height: document.documentElement.scrollHeight,
  };
})()"""


def test_report_opens_cleanly_in_chromium(report_dir: Path, browser: Chromium) -> None:
    html = report_dir / "report.html"
    for domain in ("Runtime", "Log", "Page"):
        browser.call(f"{domain}.enable")
    browser.call("Page.navigate", url=html.resolve().as_uri())
    browser.wait_for("Page.loadEventFired")
    facts = browser.evaluate(PAGE_FACTS)

    assert facts["sections"] == [
        "leaderboard",
        "flags",
        "summary",
        "curves",
        "heatmap",
        "examples",
        "crosscheck",
        "manifest",
    ]
    assert facts["leaderboardRows"] == 2  # one row per model
    # 2 curves (one per attack) + 1 heatmap (linf) + 4 cells x (example grid + first-image strip)
    assert facts["images"] == 11
    assert facts["dataImages"] == facts["images"]
    assert facts["decoded"] == facts["images"], "an embedded PNG did not decode"
    assert facts["external"] == 0, "the report must not load anything from outside itself"
    assert facts["summaryRows"] == 6  # per model: fgsm, fgsm_t and their worst case
    assert facts["title"].startswith("Robustness report")
    assert browser.problems() == []

    _screenshot(browser, int(facts["height"]), "report.png")


def _screenshot(browser: Chromium, height: int, name: str) -> None:
    width, height = 1280, min(height, 6000)
    browser.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
    shot = browser.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
    png = base64.b64decode(shot["data"])
    assert png.startswith(b"\x89PNG")
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / name).write_bytes(png)


def test_comparison_opens_with_its_banner_and_summary(report_run: Path, tmp_path: Path, browser: Chromium) -> None:
    """Two runs whose data digests differ: the banner says so first, the per-model summary follows, tables fit."""
    from reports.render import render_report
    from reports.sources import load_run

    other = tmp_path / "other"
    shutil.copytree(report_run, other, ignore=shutil.ignore_patterns("report", "cells"))
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["data"]["digest"] = "another-draw"
    (other / "manifest.json").write_text(json.dumps(manifest))
    paths = render_report([load_run(report_run, label="base"), load_run(other, label="cand")], tmp_path / "cmp")
    for domain in ("Runtime", "Log", "Page"):
        browser.call(f"{domain}.enable")
    browser.call("Page.navigate", url=paths.html.resolve().as_uri())
    browser.wait_for("Page.loadEventFired")
    facts = browser.evaluate(PAGE_FACTS)
    assert facts["sections"][0] == "comparison"
    assert facts["banner"] == [
        f"data digest: {json.loads((report_run / 'manifest.json').read_text())['data']['digest']} vs another-draw"
    ]
    assert facts["modelSummaryRows"] == 2  # mlp and lenet at linf 0.1
    assert facts["decoded"] == facts["images"] and facts["external"] == 0
    assert browser.problems() == []
    browser.call("Emulation.setDeviceMetricsOverride", width=1280, height=900, deviceScaleFactor=1, mobile=False)
    assert browser.evaluate(PAGE_FACTS)["overflowing"] == 0, "a table runs past a 1280-pixel window"
    _screenshot(browser, int(facts["height"]), "report-comparison.png")


def test_a_broken_page_is_caught(tmp_path: Path, browser: Chromium) -> None:
    """The checks above can fail: a script error and a missing image are reported."""
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html><body><img src='missing.png'><script>console.error('boom'); undefinedCall();</script>"
        "</body></html>"
    )
    for domain in ("Runtime", "Log", "Page"):
        browser.call(f"{domain}.enable")
    browser.call("Page.navigate", url=page.as_uri())
    browser.wait_for("Page.loadEventFired")
    problems = "\n".join(browser.problems())
    assert "boom" in problems
    assert "undefinedCall" in problems
    assert "missing.png" in problems
