"""The original AutoAttack as a second reference (issue 32): ``bench crosscheck --autoattack``.

The optional package ``pyautoattack`` (the ``autoattack`` extra, in ``dev``) runs beside the native attacks on the
same samples; the native attack must not be significantly weaker (paired McNemar at 0.001)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench import autoattack_ref
from bench.cli import app
from bench.data import load_dataset, select

pytest.importorskip("pyautoattack", reason="the autoattack extra (pip install -e '.[autoattack]')")


def test_apgd_is_not_weaker_than_the_original_apgd_ce(lenet_digits) -> None:
    data = select(load_dataset("digits", "test"), limit=40)
    (row,) = autoattack_ref.compare_with_autoattack({"lenet": lenet_digits}, data, eps=0.1, pairs=("apgd",))
    assert row.original == "APGD-CE" and row.n == 40
    assert row.passed and row.p_weaker >= autoattack_ref.ALPHA
    # the same samples on both sides: the discordant counts explain the difference of the robust accuracies
    assert row.robust_native - row.robust_original == pytest.approx((row.only_original - row.only_native) / 40)
    assert row.seconds_native > 0 and row.seconds_original > 0


@pytest.mark.slow
def test_every_pair_on_the_cli(tmp_path: Path) -> None:
    out = tmp_path / "aa.json"
    args = ["crosscheck", "--autoattack", "--model", "lenet", "--data", "digits", "--limit", "40", "--eps", "0.1"]
    result = CliRunner().invoke(app, [*args, "--json", str(out)])
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["autoattack"]
    assert [r["pair"] for r in rows] == ["apgd", "apgd_t", "reliable"]
    assert all(r["passed"] for r in rows) and all(r["time_ratio"] > 0 for r in rows)
    assert "not significantly weaker than the original AutoAttack" in result.output


def test_without_the_package_the_comparison_is_skipped_with_one_line() -> None:
    code = "import sys; sys.modules['pyautoattack'] = None; from bench.cli import main; main()"
    args = ["crosscheck", "--autoattack", "--model", "lenet", "--data", "digits"]
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == autoattack_ref.MISSING


def test_autoattack_takes_a_model_and_data() -> None:
    result = CliRunner().invoke(app, ["crosscheck", "--autoattack", "--data", "digits"])
    assert result.exit_code == 2 and "--autoattack takes --model M --data D" in result.output
