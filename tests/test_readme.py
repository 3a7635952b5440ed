"""The README's two set-up commands are the ones CI and users run."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _bash_blocks(text: str) -> list[str]:
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_ci_runs_the_readme_test_command() -> None:
    readme = (REPO / "README.md").read_text()
    setup = readme.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    blocks = _bash_blocks(setup)
    assert len(blocks) == 2, "the Set-up section gives exactly two commands"
    main, tests = blocks
    assert "bench run suites/quickstart.yaml" in main and ".venv" in main
    ci = (REPO / ".ci" / "run").read_text()
    assert tests in ci.splitlines(), "the README's test command must appear verbatim in .ci/run"
    assert "pytest" in tests


def test_every_shipped_suite_is_listed_and_valid() -> None:
    from bench.suite import load_suite

    for path in sorted((REPO / "suites").glob("*.yaml")):
        load_suite(path)
