"""The regression gate end to end: real runs of small zoo models, `bench check` through the CLI."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

from bench.cli import app
from bench.engine import run_suite
from bench.gate.baseline import baseline_from_run, write_baseline
from bench.stats import holm, mcnemar_p, two_proportion_p
from bench.suite import SuiteError, validate
from bench.suite.rules import RULES, parse_floor

EPS = [0, 0.05, 0.1, 0.15]


def _suite(name: str = "gate", *, models: list[Any] | None = None, **over: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "name": name,
        "device": "cpu",
        "dataset": {"name": "mnist5k", "split": "test", "n": 500},
        "models": models or ["mlp", "lenet"],
        "attacks": [{"name": "fgsm", "params": {"norm": "linf"}}],
        "epsilons": EPS,
        "tracking": {"enabled": False},
    }
    raw.update(over)
    return raw


def _run(raw: dict[str, Any], out: Path) -> Path:
    run_suite(validate(raw), out=out, track=False, echo=None)
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Baseline run, a degraded LeNet (1 epoch), the same models on 500 other samples, another eps grid."""
    root = tmp_path_factory.mktemp("gate-runs")
    base = _run(_suite(), root / "base")
    write_baseline(baseline_from_run(base), root / "baseline.json")
    return {
        "base": base,
        "baseline": root / "baseline.json",
        "degraded": _run(_suite(models=["mlp", {"name": "lenet", "recipe": {"epochs": 1}}]), root / "degraded"),
        "other": _run(_suite(dataset={"name": "mnist5k", "split": "test", "n": 500, "offset": 500}), root / "other"),
        "grid": _run(_suite(models=["mlp"], epsilons=[0, 0.1]), root / "grid"),
        "root": root,
    }


def _check(*args: str) -> Any:
    return CliRunner().invoke(app, ["check", *map(str, args)])


def test_degraded_model_is_caught(runs: dict[str, Path]) -> None:
    junit, md = runs["root"] / "degraded.xml", runs["root"] / "degraded.md"
    result = _check(runs["degraded"], "--baseline", runs["baseline"], "--junit", junit, "--markdown", md)
    assert result.exit_code == 1, result.output
    assert "regressed" in result.stdout
    cases = ET.parse(junit).getroot().findall(".//testcase")
    assert len(cases) == 2 * (len(EPS) + 1)  # one per (cell, eps) and one AUC per cell
    failed = {(c.get("classname"), c.get("name")) for c in cases if c.find("failure") is not None}
    # LeNet after one epoch loses robust accuracy everywhere; the untouched MLP is identical and passes.
    assert ("gate.lenet.fgsm", "auc") in failed
    assert ("gate.lenet.fgsm", "eps=0.1") in failed
    assert not any(cls == "gate.mlp.fgsm" for cls, _ in failed)
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and int(suite.get("failures", "-1")) == len(failed)
    text = md.read_text()
    assert "❌ FAIL" in text and "McNemar mid-p" in text and "| ❌ | lenet | fgsm | auc |" in text


def test_same_run_passes_and_is_paired(runs: dict[str, Path]) -> None:
    result = _check(runs["base"], "--baseline", runs["baseline"])
    assert result.exit_code == 0, result.output
    assert "McNemar" in result.stdout and "PASS" in result.stdout


def test_other_random_subset_of_equal_size_is_not_flagged(runs: dict[str, Path]) -> None:
    refused = _check(runs["other"], "--baseline", runs["baseline"])
    assert refused.exit_code == 2
    assert "other samples" in refused.stderr and "--allow-other-data" in refused.stderr
    junit = runs["root"] / "other.xml"
    result = _check(runs["other"], "--baseline", runs["baseline"], "--allow-other-data", "--junit", junit)
    assert result.exit_code == 0, result.output
    cases = ET.parse(junit).getroot().findall(".//testcase")
    assert all(c.find("failure") is None for c in cases)
    out = " ".join(c.findtext("system-out") or "" for c in cases)
    assert "two-proportion z" in out and "Welch t" in out
    # The numbers really differ: the gate passes because the differences are within sampling noise.
    base, other = baseline_from_run(runs["base"]), baseline_from_run(runs["other"])
    assert base.data.digest != other.data.digest
    assert base.cells[0].points[0].robust != other.cells[0].points[0].robust


def test_other_eps_grid_is_refused(runs: dict[str, Path]) -> None:
    result = _check(runs["grid"], "--baseline", runs["baseline"])
    assert result.exit_code == 2
    assert "cell mlp/fgsm: eps grid differs: baseline [0, 0.05, 0.1, 0.15], run [0, 0.1]" in result.stderr
    assert "cell lenet/fgsm is in the baseline but not in the run" in result.stderr


def test_other_suite_is_refused(runs: dict[str, Path]) -> None:
    raw = json.loads(runs["baseline"].read_text())
    raw["suite"] = "quickstart"
    other = runs["root"] / "other-suite.json"
    other.write_text(json.dumps(raw))
    result = _check(runs["base"], "--baseline", other)
    assert result.exit_code == 2
    assert f"{other}: baseline does not match the run" in result.stderr
    assert "the baseline is for suite 'quickstart', the run is suite 'gate'" in result.stderr


def test_malformed_baseline_is_refused(runs: dict[str, Path]) -> None:
    broken = runs["root"] / "broken.json"
    broken.write_text('{"format": "bench-baseline", "version": 1, "suite": ')
    result = _check(runs["base"], "--baseline", broken)
    assert result.exit_code == 2 and f"{broken}: not valid JSON" in result.stderr
    missing = _check(runs["base"], "--baseline", runs["root"] / "nope.json")
    assert missing.exit_code == 2 and "baseline file not found" in missing.stderr


def test_floors_from_the_command_line(runs: dict[str, Path]) -> None:
    # Floors alone (no baseline): LeNet's robust accuracy at eps 0.1 is about 0.77 on these samples.
    ok = _check(runs["base"], "--floor", "lenet/fgsm@0.1>=0.6", "--floor", "*/fgsm:auc>=0.3")
    assert ok.exit_code == 0, ok.output
    low = _check(runs["base"], "--floor", "lenet/fgsm@0.1>=0.9", "--junit", runs["root"] / "floor.xml")
    assert low.exit_code == 1
    failures = ET.parse(runs["root"] / "floor.xml").getroot().findall(".//failure")
    assert [f.get("type") for f in failures] == ["below floor"]
    assert "lenet/fgsm@0.1 robust accuracy >= 0.9 not met" in (failures[0].get("message") or "")


def test_floors_from_the_suite(runs: dict[str, Path], tmp_path: Path) -> None:
    raw = _suite(models=["mlp"], checks=[{"model": "mlp", "attack": "fgsm", "eps": 0.05, "min": 0.95}])
    run = _run(raw, tmp_path / "run")
    result = _check(run, "--junit", tmp_path / "j.xml")
    assert result.exit_code == 1
    assert "below floor" in result.stdout


def test_rule_that_matches_nothing_is_a_config_error(runs: dict[str, Path]) -> None:
    typo = _check(runs["base"], "--floor", "lenett/fgsm@0.1>=0.6")
    assert typo.exit_code == 2 and "matches no checked cell" in typo.stderr
    off_grid = _check(runs["base"], "--floor", "lenet/fgsm@0.12>=0.6")
    assert off_grid.exit_code == 2 and "lenet/fgsm [0, 0.05, 0.1, 0.15]" in off_grid.stderr
    syntax = _check(runs["base"], "--floor", "lenet fgsm 0.6")
    assert syntax.exit_code == 2 and "expected MODEL/ATTACK@EPS>=MIN" in syntax.stderr
    nothing = _check(runs["base"])
    assert nothing.exit_code == 2 and "nothing to check" in nothing.stderr
    two = _check(runs["base"], "--baseline", runs["baseline"], "--baseline-run", "abc")
    assert two.exit_code == 2 and "at most one of" in two.stderr


def test_tolerance_rule_turns_a_significant_drop_into_a_pass(runs: dict[str, Path]) -> None:
    result = _check(runs["degraded"], "--baseline", runs["baseline"], "--max-drop", "0.5", "--max-auc-drop", "0.5")
    assert result.exit_code == 0, result.output


def test_suite_checks_are_validated_with_field_paths() -> None:
    needs = r"x.yaml: checks\[1\]: a check needs 'min' \(a floor\), 'max_drop' \(a tolerance\) or 'max_flips'"
    with pytest.raises(SuiteError, match=needs):
        validate(_suite(checks=[{"min": 0.5}, {"model": "mlp"}]), source="x.yaml")
    with pytest.raises(
        SuiteError, match=r"checks\[0\]\.floor\.metric: allowed values are 'robust_accuracy', 'auc' or 'certified'"
    ):
        validate(_suite(checks=[{"metric": "loss", "min": 0.5}]), source="x.yaml")
    with pytest.raises(SuiteError, match=r"checks\[0\]\.max_drop\.eps: epsilon must be >= 0"):
        validate(_suite(checks=[{"max_drop": 0.1, "eps": -1}]), source="x.yaml")
    rules = RULES.validate_python([{"model": "lenet", "eps": "8/255", "min": 0.5}, {"max_drop": 0.1, "metric": "auc"}])
    assert rules[0].eps == pytest.approx(8 / 255)
    assert parse_floor("lenet/fgsm:auc>=0.4").metric == "auc"


# -- the statistics -------------------------------------------------------------------------------


def test_mcnemar_matches_the_binomial_definition() -> None:
    assert mcnemar_p(10, 0, mid_p=False) == pytest.approx(2.0**-10)
    assert mcnemar_p(10, 0, mid_p=True) == pytest.approx(0.5 * 2.0**-10)
    assert mcnemar_p(0, 0, mid_p=True) == 1.0
    assert mcnemar_p(7, 3, mid_p=False) == pytest.approx(stats.binomtest(7, 10, 0.5, alternative="greater").pvalue)


def test_two_proportion_matches_chi_square() -> None:
    table = np.array([[80, 20], [65, 35]])
    chi2 = stats.chi2_contingency(table, correction=False)
    assert two_proportion_p(80, 100, 65, 100) == pytest.approx(chi2.pvalue / 2)
    assert two_proportion_p(65, 100, 80, 100) == pytest.approx(1 - chi2.pvalue / 2)
    assert two_proportion_p(100, 100, 100, 100) == 1.0


def test_tests_keep_their_size_under_pure_noise() -> None:
    """Without a real change, each one-sided test rejects at most about alpha of the time."""
    rng = np.random.default_rng(0)
    trials, n, p = 4000, 500, 0.7
    x1, x2 = rng.binomial(n, p, trials), rng.binomial(n, p, trials)
    rate = np.mean([two_proportion_p(int(a), n, int(b), n) < 0.05 for a, b in zip(x1, x2, strict=True)])
    assert 0.03 < rate < 0.07
    discordant = rng.binomial(60, 0.5, trials)
    rate_mc = np.mean([mcnemar_p(int(b), 60 - int(b), mid_p=True) < 0.05 for b in discordant])
    assert 0.03 < rate_mc < 0.065


def test_holm_adjustment() -> None:
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5]) == [0.5]
    assert holm([0.9, 0.9]) == [1.0, 1.0]


def test_a_drop_equal_to_the_tolerance_is_not_a_regression() -> None:
    from bench.gate.compare import Item, _status

    # 901 -> 871 robust samples of 1,000: a drop of exactly 0.03, which float subtraction makes 0.030000000000000027
    item = Item("m", "pgd", 0.1, current=0.871, n_current=1000, baseline=0.901, n_baseline=1000, tolerance=0.03)
    item.p_drop_adjusted, item.p_rise_adjusted = 1e-6, 1.0
    assert 0.901 - 0.871 > 0.03  # the float trap itself
    assert _status(item, alpha=0.05) == ("ok", "")
    item.current = 0.870
    assert _status(item, alpha=0.05)[0] == "regressed"
