"""The README's tables are the tables a new user gets: its quickstart table (and, in the slow run, the defended
models' table) is recomputed here on the shipped reference weights and compared number for number, within three
samples of 1,000 (another CPU's kernels flip a few boundary samples; on this project's machine they are equal)."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from bench.engine import run_suite
from bench.stats import curve_auc
from bench.suite import load_suite

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 0.003
"""Three samples of 1,000: on another CPU's kernels the same weights flipped at most 2 of 1,000 samples at
one FGSM point (README "Reference weights": 7 of 10,000 sample points under emulated AVX2 and SSE4.1)."""


def _close(shown: list[str], expected: list[str]) -> bool:
    """Cells such as ``0.925`` or ``0.749 / 0.369`` equal within :data:`TOLERANCE`, number by number."""
    a = [float(v) for cell in shown for v in cell.split(" / ")]
    b = [float(v) for cell in expected for v in cell.split(" / ")]
    return len(a) == len(b) and all(abs(x - y) <= TOLERANCE + 1e-9 for x, y in zip(a, b, strict=True))


README = (ROOT / "README.md").read_text()
GETTING_STARTED = (ROOT / "docs" / "getting-started.md").read_text()


def _table_after(marker: str, text: str = README) -> list[list[str]]:
    """The rows of the first Markdown table after ``marker`` in ``text`` (cells stripped, header and rule dropped)."""
    start = text.index(marker)
    lines = text[start:].splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[first:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows[2:]


def _cell(results: pd.DataFrame, model: str, attack: str) -> pd.DataFrame:
    return results[(results["model"] == model) & (results["attack"] == attack)].sort_values("eps")


def test_the_quickstart_table_is_what_the_readme_command_prints(tmp_path: Path) -> None:
    suite = load_suite(ROOT / "suites" / "quickstart.yaml")
    outcome = run_suite(suite, out=tmp_path / "run", track=False, echo=None)
    weights = outcome.manifest["weights"]
    assert {w["kind"] for w in weights.values()} == {"reference"}, weights
    rows = _table_after("| model | clean | eps 0.05 |")
    assert [row[0].strip("`") for row in rows] == ["mlp", "lenet", "cnn"]
    for row in rows:
        cell = _cell(outcome.results, row[0].strip("`"), "fgsm")
        accuracies = cell["robust_accuracy"].tolist()  # eps 0 (= clean), 0.05 ... 0.3
        expected = [f"{accuracies[0]:.3f}", *(f"{a:.3f}" for a in accuracies[1:])]
        expected.append(f"{curve_auc(cell['eps'].tolist(), accuracies):.3f}")
        assert _close(row[1:], expected), (row, expected)
    shown = re.search(r"^reference weights: (.*)$", README, re.M)
    assert shown is not None
    assert shown.group(1) == ", ".join(f"{m} {w['sha256'][:12]}" for m, w in weights.items())


DEFENDED_COLUMNS = ("fgsm", "pgd", "apgd", "pgd_bpda", "uniform_noise", "reliable")
"""The attacks of README "Defended models"'s table, in its column order (robust accuracy at eps 0.1 / 0.2)."""


@pytest.mark.slow
def test_the_defended_models_table_is_what_robust_mnist_gives(tmp_path: Path) -> None:
    """`bench run suites/robust_mnist.yaml` on the reference weights: every number of the README's table (the
    cell times aside), about 10 minutes on 2 cores."""
    suite = load_suite(ROOT / "suites" / "robust_mnist.yaml")
    outcome = run_suite(suite, out=tmp_path / "run", track=False, echo=None)
    assert {w["kind"] for w in outcome.manifest["weights"].values()} == {"reference"}
    rows = _table_after("| model | clean | FGSM | PGD-40 |")
    assert [row[0].strip("`") for row in rows] == ["lenet", "lenet_at", "lenet_quantized"]
    for row in rows:
        model = row[0].strip("`")
        clean = _cell(outcome.results, model, "fgsm")["clean_accuracy"].iloc[0]
        expected = [f"{clean:.3f}"]
        for attack in DEFENDED_COLUMNS:
            cell = _cell(outcome.results, model, attack).set_index("eps")["robust_accuracy"]
            expected.append(f"{cell.loc[0.1]:.3f} / {cell.loc[0.2]:.3f}")
        shown = [cell.replace("*", "") for cell in row[1 : 1 + len(expected)]]
        assert _close(shown, expected), (model, shown, expected)


def test_the_site_shows_the_readme_tables() -> None:
    """The tables the README and the site both show are the same rows (the README's are the ones checked above)."""
    models_page = (ROOT / "docs" / "models.md").read_text()
    marker = "| model | clean | FGSM | PGD-40 |"
    assert _table_after(marker) == _table_after(marker, models_page), "README and docs/models.md differ"
    marker = "| model | clean | eps 0.05 |"
    assert _table_after(marker) == _table_after(marker, GETTING_STARTED), "README and docs/getting-started.md differ"
