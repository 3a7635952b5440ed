"""The one sample-selection rule (``bench.data.select``) and the places that use it.

``bench crosscheck SUITE`` must attack the suite's own samples: before the rule was
shared it ignored ``dataset.offset`` and cross-checked the first samples of the split.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import trained
from typer.testing import CliRunner

from bench.crosscheck import CROSSCHECK_COLUMNS, crosscheck_models
from bench.data import DataError, select

OFFSET, N = 100, 12


def test_select_offset_n_and_limit(digits_test) -> None:
    chosen = select(digits_test, offset=OFFSET, n=N)
    assert len(chosen) == N
    assert torch.equal(chosen.x, digits_test.x[OFFSET : OFFSET + N])
    assert torch.equal(chosen.indices, torch.arange(OFFSET, OFFSET + N))  # positions in the full split
    assert len(select(digits_test, offset=OFFSET, n=N, limit=5)) == 5
    assert len(select(digits_test, n=N, limit=500)) == N  # --limit caps, it never adds samples
    assert len(select(digits_test, limit=7)) == 7
    assert select(digits_test) is digits_test


def test_select_errors_name_the_suite_field(digits_test) -> None:
    with pytest.raises(DataError, match=r"dataset\.offset: 360 is not below the size of the test split"):
        select(digits_test, offset=360)
    with pytest.raises(DataError, match=r"dataset\.n: 300 is larger than the test split of 'digits' \(260 samples\)"):
        select(digits_test, offset=OFFSET, n=300)


def test_cli_crosscheck_of_a_suite_uses_its_offset(tmp_path: Path, digits_test) -> None:
    """The table of ``bench crosscheck SUITE`` is the one of the suite's samples, not of the split's first ones."""
    from bench.cli import app

    suite = {
        "name": "crosscheck-offset",
        "dataset": {"name": "digits", "split": "test", "offset": OFFSET, "n": N},
        "models": ["mlp"],
        "attacks": ["fgsm"],
        "epsilons": [0, 0.1, 0.2],
    }
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    out = tmp_path / "cc.json"
    result = CliRunner().invoke(app, ["crosscheck", str(path), "--limit", str(N), "--json", str(out)])
    assert result.exit_code in (0, 1), result.output
    rows = json.loads(out.read_text())["rows"]

    model = {"mlp": trained("mlp", "digits")}
    numbers = ["pair", "eps", "n", "robust_acc_native", "robust_acc_art", "label_agreement", "max_abs_diff"]
    assert set(numbers) <= set(CROSSCHECK_COLUMNS)

    def table(offset: int) -> list[dict]:
        frame = crosscheck_models(model, select(digits_test, offset=offset, n=N), seed=0, n=N)
        return json.loads(frame[numbers].to_json(orient="records"))

    assert [{k: r[k] for k in numbers} for r in rows] == table(OFFSET)
    assert table(OFFSET) != table(0)  # the offset matters: the old code's samples give another table
