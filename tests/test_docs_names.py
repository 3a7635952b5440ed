"""The names the README and the site quote are the code's: metrics MLflow really receives, columns the run
directory really has, and every inline ``snake_case`` name somewhere in the code.

The metric names are read back from a real run mirrored into MLflow (one attack per norm family, an
unbounded one, a minimal-eps cell and two certifiers), not from a list kept beside the docs.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from bench.certified import CERTIFIED_COLUMNS, CERTIFIED_SAMPLE_COLUMNS
from bench.crosscheck import CROSSCHECK_COLUMNS, default_pairs
from bench.engine import run_suite
from bench.rundir import OPTIONAL_RESULT_COLUMNS, OPTIONAL_SAMPLE_COLUMNS, RESULT_COLUMNS, SAMPLE_COLUMNS
from bench.suite import load_suite
from tests.docblocks import REPO, pages

SUITE = """
name: docs-names
dataset: {name: digits, split: test, n: 24}
models: [mlp]
attacks:
  - {name: fgsm, minimal_eps: true}
  - {name: pgd, label: pgd_l2, params: {norm: l2, steps: 3}, epsilons: [0, 0.5]}
  - {name: salt_pepper, epsilons: [0, 0.05]}
  - {name: occlusion, epsilons: [0, 2]}
  - {name: fooling_images, epsilons: [0], params: {steps: 5}}
epsilons: [0, 0.1, 0.3]
certify:
  - ibp
  - {name: smoothing, params: {n: 50}, epsilons: [0, 0.25]}
crosscheck: true
tracking: {experiment: docs-names, examples: 1}
"""
CODE = ("bench", "model_zoo", "reports", "suites", "scripts", "baselines", "tests", "docs/hooks.py", "docs/ci")
CODE_FILES = ("pyproject.toml", "mkdocs.yml", ".ci/run")
SNAKE = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)+$")
METRIC = re.compile(r"\bmetrics? `([^`]+)`|`([^`]+)` metrics?\b")
COLUMN = re.compile(r"\bcolumns? `([^`]+)`|`([^`]+)` column\b")
CODE_SPAN = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")


def _prose(path: Path) -> str:
    """The page without its fenced blocks and generator markers (their names are the code's by construction)."""
    text = re.sub(r"^([ \t]*)(`{3,}).*?^\1\2[ \t]*$", "", path.read_text(encoding="utf-8"), flags=re.M | re.S)
    return re.sub(r"<!--.*?-->", "", text, flags=re.S)


@pytest.fixture(scope="module")
def metric_names(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    root = tmp_path_factory.mktemp("docs-names")
    (root / "suite.yaml").write_text(SUITE)
    outcome = run_suite(load_suite(root / "suite.yaml"), out=root / "run", track=True, echo=None)
    client = MlflowClient()
    experiment = client.get_experiment_by_name("docs-names")
    assert experiment is not None and outcome.manifest
    names: set[str] = set()
    for run in client.search_runs([experiment.experiment_id]):
        names |= set(run.data.metrics)
    return names


def test_metrics_quoted_in_the_docs_are_logged(metric_names: set[str]) -> None:
    assert {"robust_accuracy_linf", "robust_accuracy_l2", "robust_accuracy_l0", "robust_accuracy_patch"} <= metric_names
    assert {"median_min_eps_linf", "crosscheck_passed", "certified_accuracy_linf", "bracket_gap_l2"} <= metric_names
    wrong = []
    for page in pages():
        for match in METRIC.finditer(_prose(page)):
            name = match.group(1) or match.group(2)
            pattern = (
                re.escape(name).replace(re.escape("<norm>"), "(linf|l2|l0|patch)").replace(re.escape("<pair>"), ".+")
            )
            if not any(re.fullmatch(pattern, logged) for logged in metric_names):
                wrong.append(f"{page.relative_to(REPO)}: metric {name!r} (logged: {', '.join(sorted(metric_names))})")
    assert not wrong, "\n".join(wrong)


def test_columns_quoted_in_the_docs_exist() -> None:
    columns = {
        *RESULT_COLUMNS,
        *SAMPLE_COLUMNS,
        *OPTIONAL_RESULT_COLUMNS,
        *OPTIONAL_SAMPLE_COLUMNS,
        *CROSSCHECK_COLUMNS,
        *CERTIFIED_COLUMNS,
        *CERTIFIED_SAMPLE_COLUMNS,
    }
    wrong = []
    for page in pages():
        for match in COLUMN.finditer(_prose(page)):
            name = match.group(1) or match.group(2)
            if name not in columns:
                wrong.append(f"{page.relative_to(REPO)}: column {name!r}")
    assert not wrong, "\n".join(wrong)


def _torch_name(token: str) -> bool:
    """A name of the library the code runs on (``channels_last``, ``max_pool2d``), quoted where the docs explain it."""
    return hasattr(torch, token) or hasattr(torch.nn.functional, token)


def test_every_snake_case_name_quoted_exists_in_the_code(metric_names: set[str]) -> None:
    corpus = []
    for entry in CODE:
        path = REPO / entry
        files = (
            [path]
            if path.is_file()
            else [
                p
                for p in path.rglob("*")
                if p.suffix in (".py", ".yaml", ".json", ".sh", ".yml", ".j2", ".html", ".md")
            ]
        )
        corpus += [f.read_text(encoding="utf-8", errors="replace") for f in files if f.is_file()]
        corpus += [f.stem for f in files]  # a quoted test or script by its name
    corpus += [(REPO / f).read_text(encoding="utf-8") for f in CODE_FILES]
    pairs = [pair.name for pair in default_pairs()]  # cross-check pairs are named <attack>_<norm>[_targeted]
    text = "\n".join([*corpus, *metric_names, *pairs])
    missing = set()
    for page in pages():
        for span in CODE_SPAN.findall(_prose(page)):
            for token in re.findall(r"[A-Za-z0-9_]+", span):
                if SNAKE.match(token) and token not in text and not _torch_name(token):
                    missing.add(f"{page.relative_to(REPO)}: {token}")
    assert not missing, "\n".join(sorted(missing))


def test_the_suites_quoted_by_name_exist() -> None:
    shipped = {p.stem for p in (REPO / "suites").glob("*.yaml")}
    wrong = []
    for page in pages():
        for name in re.findall(r"suites/([A-Za-z0-9_]+)\.yaml", _prose(page)):
            if name not in shipped:
                wrong.append(f"{page.relative_to(REPO)}: suites/{name}.yaml")
    assert not wrong, "\n".join(wrong)
    for path in sorted((REPO / "suites").glob("*.yaml")):
        assert yaml.safe_load(path.read_text()) is not None
