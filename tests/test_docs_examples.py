"""Every shell and Python block of the README and the documentation site runs (or says why not).

The conventions are in tests/docblocks.py and docs/contributing.md ("Examples that run"). Each page runs in a
fresh folder: a copy of ``suites/`` and ``baselines/``, and ``.venv`` linked to the environment running the
tests, so ``.venv/bin/bench`` in an example is the package under test. Models come from the session's
checkpoint cache; MLflow writes ``mlflow.db`` in the page's folder, as it would in a user's.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.docblocks import DIRECTIVE, REPO, Block, blocks, pages

SHELL_TIMEOUT = 900


def _runnable_pages() -> list[Path]:
    return [p for p in pages() if any(b.kind in ("shell", "python") for b in blocks(p))]


def _sandbox(folder: Path) -> dict[str, str]:
    for name in ("suites", "baselines"):
        shutil.copytree(REPO / name, folder / name)
    (folder / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder}/mlflow.db"
    env["PYTHONPATH"] = str(folder)
    env.pop("BENCH_TRUSTED_MODULES", None)  # an example trusts what a user's shell would
    return env


def _run_shell(block: Block, folder: Path, env: dict[str, str]) -> str:
    done = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", block.code],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=SHELL_TIMEOUT,
    )
    assert done.returncode == block.expected_exit, (
        f"{block.where()}: exit {done.returncode}, expected {block.expected_exit}\n"
        f"--- block\n{block.code}--- stdout (tail)\n{done.stdout[-3000:]}\n--- stderr (tail)\n{done.stderr[-3000:]}"
    )
    assert "Traceback (most recent call last)" not in done.stderr, f"{block.where()}: a traceback\n{done.stderr}"
    return done.stdout + done.stderr


def _run_page(page: Path, folder: Path, *, slow: bool, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    env = _sandbox(folder)
    monkeypatch.chdir(folder)
    monkeypatch.syspath_prepend(str(folder))
    for key in ("MLFLOW_TRACKING_URI",):
        monkeypatch.setenv(key, env[key])
    monkeypatch.delenv("BENCH_TRUSTED_MODULES", raising=False)
    namespace: dict[str, object] = {"__name__": "__docs_example__"}
    ran: list[str] = []
    printed: str | None = None  # what the last block run printed (for an `output` block)
    before = set(sys.modules)
    try:
        for block in blocks(page):
            if block.kind == "file":
                target = folder / block.title
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(block.code, encoding="utf-8")
                continue
            if block.output:
                if printed is not None:  # None: the block it shows was not run (slow or not run)
                    for line in filter(None, (line.strip() for line in block.code.splitlines())):
                        assert line in printed, (
                            f"{block.where()}: {line!r} is not in what the block printed:\n{printed}"
                        )
                    ran.append(block.where())
                continue
            if block.kind == "shown" or block.skipped or (block.slow and not slow):
                printed = None
                continue
            if block.kind == "shell":
                printed = _run_shell(block, folder, env)
            else:
                buffer = io.StringIO()
                with contextlib.redirect_stdout(buffer):
                    exec(compile(block.code, block.where(), "exec"), namespace)
                printed = buffer.getvalue()
            ran.append(block.where())
    finally:
        for name in set(sys.modules) - before:  # modules an example imported from its folder (mynets, ...)
            module = sys.modules.get(name)
            if str(getattr(module, "__file__", "") or "").startswith(str(folder)):
                del sys.modules[name]
    return ran


@pytest.mark.parametrize("page", _runnable_pages(), ids=lambda p: str(p.relative_to(REPO)))
def test_examples_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _run_page(page, tmp_path, slow=False, monkeypatch=monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize(
    "page", [p for p in _runnable_pages() if any(b.slow for b in blocks(p))], ids=lambda p: str(p.relative_to(REPO))
)
def test_slow_examples_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ran = _run_page(page, tmp_path, slow=True, monkeypatch=monkeypatch)
    assert ran


def test_every_example_runs_or_says_why_not() -> None:
    """A runnable block is run (now or under ``slow``) or carries a reason; directives are spelled right."""
    problems = []
    for page in pages():
        text = page.read_text(encoding="utf-8")
        for number, line in enumerate(text.splitlines(), 1):
            if line.lstrip().startswith("<!-- example:") and not DIRECTIVE.match(line):
                problems.append(f"{page.relative_to(REPO)}:{number}: unknown directive {line.strip()!r}")
        for block in blocks(page):
            if block.language in ("console", "shell", "zsh", "sh-session", "pycon"):
                problems.append(
                    f"{block.where()}: {block.language!r} blocks are neither run nor marked; use bash/python"
                )
            if block.output and (block.language != "text" or len(block.directives) > 1):
                problems.append(f"{block.where()}: 'output' goes alone on a text block")
            elif block.directives and block.kind == "shown" and not block.output:
                problems.append(f"{block.where()}: a directive on a block that is not run ({block.language!r})")
    assert not problems, "\n".join(problems)


def test_the_readme_and_the_site_run_examples() -> None:
    """The runner sees the examples the README promises: its own-model suite runs, and most blocks are run."""
    readme = blocks(REPO / "README.md")
    assert [b.title for b in readme if b.kind == "file"] == ["mynets.py", "my_suite.yaml"]
    runnable = [b for p in pages() for b in blocks(p) if b.kind in ("shell", "python")]
    run_now = "".join(b.code for b in runnable if not b.skipped and not b.slow)
    for command in (
        "bench run suites/quickstart.yaml",  # the main job
        "bench run my_suite.yaml",  # the README's own model
        "bench.evaluate(",  # the Python API
        "bench check runs/new",  # the gate failing a regression
    ):
        assert command in run_now, f"{command!r} is no longer run by the default test run"
