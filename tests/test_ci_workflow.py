"""The ready CI workflow of docs/gate.md (docs/ci/robustness-gate.yml) is valid and its steps do what it says.

Its ``run:`` steps execute here in order, as GitHub Actions would run them, in a folder holding the project's
suite and baseline: the suite runs, ``bench check`` passes against the committed baseline, the Markdown
verdict lands in the job summary, and the final step exits with the gate's status. Two steps are GitHub's
own: the install (this test runs in the installed environment) and the pull-request comment (``gh`` and a
token); both are checked for shape only.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
WORKFLOW = REPO / "docs" / "ci" / "robustness-gate.yml"
GITHUB_ONLY = {"install", "comment"}


def _workflow() -> dict:
    doc = yaml.safe_load(WORKFLOW.read_text())
    assert doc["name"] and "jobs" in doc
    return doc


def _resolve(value: str, outputs: dict[str, dict[str, str]]) -> str:
    """``${{ steps.ID.outputs.KEY }}`` as Actions resolves it (the only expression the run steps' env uses)."""
    return re.sub(r"\$\{\{\s*steps\.(\w+)\.outputs\.(\w+)\s*\}\}", lambda m: outputs[m.group(1)][m.group(2)], value)


def test_the_workflow_is_what_the_docs_include() -> None:
    doc = _workflow()
    steps = doc["jobs"]["gate"]["steps"]
    assert doc["permissions"]["pull-requests"] == "write"
    ids = [s.get("id") for s in steps if "run" in s]
    assert ids == ["install", "run", "gate", "summary", "comment", "verdict"]
    comment = next(s for s in steps if s.get("id") == "comment")
    assert "gh pr comment" in comment["run"] and "--body-file gate.md" in comment["run"]
    assert "snippets" in (REPO / "mkdocs.yml").read_text()
    assert '--8<-- "docs/ci/robustness-gate.yml"' in (REPO / "docs" / "gate.md").read_text()


def test_the_workflow_steps_run_and_pass_on_the_baseline(tmp_path: Path) -> None:
    doc = _workflow()
    for name in ("suites", "baselines"):
        shutil.copytree(REPO / name, tmp_path / name)
    (tmp_path / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    summary, output = tmp_path / "summary.md", tmp_path / "output.txt"
    env = {**os.environ, **doc["env"], "GITHUB_STEP_SUMMARY": str(summary)}
    env["BENCH_CACHE"] = os.environ["BENCH_CACHE"]  # the session's cache, not the workflow's folder
    outputs: dict[str, dict[str, str]] = {}
    for step in doc["jobs"]["gate"]["steps"]:
        if "run" not in step or step["id"] in GITHUB_ONLY:
            continue
        output.write_text("")
        step_env = {**env, "GITHUB_OUTPUT": str(output)}
        step_env.update({k: _resolve(str(v), outputs) for k, v in step.get("env", {}).items()})
        done = subprocess.run(
            ["bash", "-e", "-c", step["run"]], cwd=tmp_path, env=step_env, capture_output=True, text=True, timeout=900
        )
        assert done.returncode == 0, (step["id"], done.stdout[-3000:], done.stderr[-3000:])
        outputs[step["id"]] = dict(line.split("=", 1) for line in output.read_text().splitlines() if "=" in line)
    assert outputs["gate"] == {"status": "0"}
    verdict = summary.read_text()
    assert "PASS" in verdict and "| lenet |" in verdict.replace("`", ""), verdict[:2000]
    assert (tmp_path / "gate.xml").read_text().startswith("<?xml")
