"""The gate with weights that travel: same weights and a reproducible attack mean identical per-sample results.

Run directories come from a real ``bench run`` (one small suite); copies of it
get the weights (``models.json``) and reproducibility (``manifest.json``) that
zoo reference weights record, and a flipped per-sample flag in
``samples.parquet`` stands for a code change that altered one result.
"""

from __future__ import annotations

import json
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from bench.cli import app
from bench.engine import run_suite
from bench.gate.baseline import BaselineError, baseline_from_run, parse_baseline, read_baseline, write_baseline
from bench.gate.compare import compare
from bench.gate.exact import Flips, ModelWeights, compare_weights, point_flips
from bench.gate.render import junit_xml, markdown
from bench.rundir import RunError
from bench.suite import RULES, AllowFlips, RuleError, SuiteError, parse_rules, validate
from tests.conftest import record_results

REFERENCE = "0123456789ab" + "c" * 52
OTHER = "fedcba987654" + "d" * 52
EPS = [0, 0.1, 0.2]


@pytest.fixture(scope="module")
def base_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run (mlp on 120 digits, FGSM and PGD) whose weights are the reference ones and FGSM reproducible."""
    raw = {
        "name": "weights-gate",
        "device": "cpu",
        "dataset": {"name": "digits", "n": 120},
        "models": ["mlp"],
        "attacks": [{"name": "fgsm", "params": {"norm": "linf"}}, {"name": "pgd", "params": {"steps": 5}}],
        "epsilons": EPS,
        "tracking": {"enabled": False},
    }
    out = tmp_path_factory.mktemp("weights-gate") / "base"
    run_suite(validate(raw), out=out, track=False, echo=None)
    _set_weights(out, REFERENCE, "reference")
    _set_reproducible(out, fgsm=True, pgd=False)  # whatever the attacks declare, so that the tests stay put
    return out


@pytest.fixture(scope="module")
def baseline_file(base_run: Path) -> Path:
    path = base_run.parent / "baseline.json"
    write_baseline(baseline_from_run(base_run), path)
    return path


def _set_weights(run: Path, sha256: str, kind: str) -> None:
    models = json.loads((run / "models.json").read_text())
    models["mlp"].update(weights_sha256=sha256, weights=kind)
    (run / "models.json").write_text(json.dumps(models))


def _set_reproducible(run: Path, **attacks: bool) -> None:
    manifest = json.loads((run / "manifest.json").read_text())
    for attack, value in attacks.items():
        manifest["attacks"][attack]["reproducible"] = value
    (run / "manifest.json").write_text(json.dumps(manifest))


def _copy(base_run: Path, tmp_path: Path, name: str = "copy") -> Path:
    return Path(shutil.copytree(base_run, tmp_path / name))


def _flip(run: Path, attack: str, count: int = 1, eps: float = max(EPS)) -> list[int]:
    """Make ``count`` samples robust at ``eps`` lose it there and beyond (the flags stay cumulative)."""
    samples = pd.read_parquet(run / "samples.parquet")
    of_attack = samples["attack"] == attack
    chosen = samples[of_attack & (samples["eps"] == eps) & samples["correct"]].sort_values("index")["index"][:count]
    samples.loc[of_attack & (samples["eps"] >= eps) & samples["index"].isin(chosen), "correct"] = False
    samples.to_parquet(run / "samples.parquet")
    record_results(run)  # a run that produced these flags, not an edited one
    return [int(i) for i in chosen]


def _add_checks(run: Path, checks: list[dict[str, Any]]) -> None:
    suite = yaml.safe_load((run / "suite.yaml").read_text())
    suite["checks"] = checks
    (run / "suite.yaml").write_text(yaml.safe_dump(suite))


def _check(*args: object) -> Any:
    return CliRunner().invoke(app, ["check", *map(str, args)])


# -- the gate through the CLI ----------------------------------------------------------------------------


def test_one_flipped_sample_with_the_same_weights_fails_and_is_named(
    base_run: Path, baseline_file: Path, tmp_path: Path
) -> None:
    run = _copy(base_run, tmp_path)
    (sample,) = _flip(run, "fgsm")
    junit, md = tmp_path / "j.xml", tmp_path / "s.md"
    result = _check(run, "--baseline", baseline_file, "--junit", junit, "--markdown", md)
    assert result.exit_code == 1, result.output
    assert "FAIL: 0 regressed, 0 below floor, 1 changed" in result.stdout
    assert "weights mlp: same (reference 0123456789ab)" in result.stdout
    assert "mlp: same weights (reference, sha256 0123456789ab)" in result.stderr
    failures = ET.parse(junit).getroot().findall(".//failure")
    assert [f.get("type") for f in failures] == ["changed"]
    message = failures[0].get("message") or ""
    assert f"lost 1 (sample {sample})" in message and "same weights" in message
    (case,) = [c for c in ET.parse(junit).getroot().iter("testcase") if c.find("failure") is not None]
    assert (case.get("classname"), case.get("name")) == ("weights-gate.mlp.fgsm", "eps=0.2")
    text = md.read_text()
    assert "1 changed" in text and f"lost 1 (sample {sample})" in text
    assert "| mlp | reference | `0123456789ab` | reference | `0123456789ab` | same weights |" in text


def test_identical_results_with_the_same_weights_pass(base_run: Path, baseline_file: Path, tmp_path: Path) -> None:
    junit = tmp_path / "j.xml"
    result = _check(base_run, "--baseline", baseline_file, "--junit", junit)
    assert result.exit_code == 0, result.output
    assert "PASS" in result.stdout and "weights mlp: same (reference 0123456789ab)" in result.stdout
    assert "same weights (reference, sha256 0123456789ab)" in result.stderr
    assert "compared exactly" in result.stderr and "mlp/fgsm" in result.stderr
    props = {p.get("name"): p.get("value") for p in ET.parse(junit).getroot().iter("property")}
    assert props == {"weights.mlp": "same (reference 0123456789ab)"}


def test_an_allow_flips_rule_accepts_up_to_max_flips(base_run: Path, baseline_file: Path, tmp_path: Path) -> None:
    run = _copy(base_run, tmp_path)
    (sample,) = _flip(run, "fgsm")
    _add_checks(run, [{"model": "*", "attack": "fgsm", "max_flips": 1}])
    result = _check(run, "--baseline", baseline_file, "--junit", tmp_path / "j.xml")
    assert result.exit_code == 0, result.output
    outs = [c.findtext("system-out") or "" for c in ET.parse(tmp_path / "j.xml").getroot().iter("testcase")]
    assert any(f"1 per-sample change allowed (max_flips 1): lost 1 (sample {sample})" in o for o in outs)
    # a rule for another eps does not cover the change; max_flips 0 accepts none
    _add_checks(run, [{"attack": "fgsm", "eps": 0.1, "max_flips": 5}])
    assert _check(run, "--baseline", baseline_file).exit_code == 1
    _add_checks(run, [{"attack": "fgsm", "max_flips": 0}])
    assert _check(run, "--baseline", baseline_file).exit_code == 1


def test_other_weights_are_compared_statistically(base_run: Path, baseline_file: Path, tmp_path: Path) -> None:
    run = _copy(base_run, tmp_path)
    _flip(run, "fgsm")
    _set_weights(run, OTHER, "retrained")
    result = _check(run, "--baseline", baseline_file)
    assert result.exit_code == 0, result.output
    assert "mlp: weights differ: the difference includes training variance" in result.stderr
    assert "weights mlp: differ (run retrained fedcba987654, baseline reference 0123456789ab)" in result.stdout
    assert "changed" not in result.stdout and "compared exactly" not in result.stderr


def test_a_non_reproducible_attack_is_compared_statistically(
    base_run: Path, baseline_file: Path, tmp_path: Path
) -> None:
    run = _copy(base_run, tmp_path)
    _flip(run, "pgd")
    result = _check(run, "--baseline", baseline_file)
    assert result.exit_code == 0, result.output
    assert "changed" not in result.stdout


def test_a_version_1_baseline_still_reads_and_compares(base_run: Path, baseline_file: Path, tmp_path: Path) -> None:
    raw = json.loads(baseline_file.read_text())
    assert raw["version"] == 2 and raw["models"] == {"mlp": {"sha256": REFERENCE, "weights": "reference"}}
    assert [c["reproducible"] for c in raw["cells"]] == [True, False]
    raw["version"] = 1
    del raw["models"]
    for cell in raw["cells"]:
        del cell["reproducible"]
    old = tmp_path / "v1.json"
    old.write_text(json.dumps(raw))
    baseline = read_baseline(old)
    assert baseline.version == 1 and baseline.models == {} and not any(c.reproducible for c in baseline.cells)
    passed = _check(base_run, "--baseline", old)
    assert passed.exit_code == 0, passed.output
    assert "mlp: weights unknown in the baseline: compared statistically" in passed.stderr
    run = _copy(base_run, tmp_path)
    _flip(run, "fgsm")
    assert _check(run, "--baseline", old).exit_code == 0  # weights unknown: no exact comparison
    write_baseline(baseline, tmp_path / "again.json")
    assert json.loads((tmp_path / "again.json").read_text())["version"] == 2
    # version 1 has no models or reproducible fields
    raw["models"] = {}
    with pytest.raises(BaselineError, match=r"v1\.json: models: not part of baseline format version 1"):
        parse_baseline(json.dumps(raw), source=str(old))


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"sha256": "XYZ", "weights": "reference"}, r"models\.mlp\.sha256: String should match pattern"),
        ({"sha256": "ab" * 40, "weights": "reference"}, r"models\.mlp\.sha256: String should match pattern"),
        ({"sha256": REFERENCE, "weights": "pretrained"}, r"models\.mlp\.weights: allowed values are 'reference'"),
        ({"sha256": "", "weights": "reference"}, r"models\.mlp: sha256: empty, but weights are 'reference'"),
        ({"sha256": REFERENCE}, r"models\.mlp\.weights: Field required"),
        ({"sha256": REFERENCE, "weights": "reference", "size": 1}, r"models\.mlp\.size: unknown field"),
        ("reference", r"models\.mlp: expected a mapping"),
    ],
)
def test_a_malformed_models_entry_is_refused(
    base_run: Path, baseline_file: Path, tmp_path: Path, entry: object, message: str
) -> None:
    raw = json.loads(baseline_file.read_text())
    raw["models"]["mlp"] = entry
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(BaselineError, match=r"^" + re.escape(str(path)) + ": " + message) as caught:
        read_baseline(path)
    assert "\n" not in str(caught.value)
    result = _check(base_run, "--baseline", path)
    assert result.exit_code == 2 and str(path) in result.stderr and "Traceback" not in result.output


def test_malformed_weights_in_a_run_are_refused_with_the_file_and_field(base_run: Path, tmp_path: Path) -> None:
    run = _copy(base_run, tmp_path)
    _set_weights(run, "not-hex", "reference")
    with pytest.raises(RunError, match=r"models\.json: mlp\.weights_sha256: String should match pattern"):
        baseline_from_run(run)
    result = CliRunner().invoke(app, ["baseline", str(run), "-o", str(tmp_path / "b.json")])
    assert result.exit_code == 2 and "mlp.weights_sha256" in result.stderr
    _set_weights(run, REFERENCE, "borrowed")
    with pytest.raises(RunError, match=r"models\.json: mlp\.weights: allowed values are"):
        baseline_from_run(run)
    _set_weights(run, "", "external")
    with pytest.raises(RunError, match=r"models\.json: mlp\.weights_sha256: empty, but weights are 'external'"):
        baseline_from_run(run)
    _set_weights(run, REFERENCE, "reference")
    _set_reproducible(run, fgsm="yes")  # type: ignore[arg-type]
    with pytest.raises(RunError, match=r"manifest\.json: attacks\.fgsm\.reproducible: expected a boolean"):
        baseline_from_run(run)


def test_an_old_run_directory_has_unknown_weights(base_run: Path, tmp_path: Path) -> None:
    run = _copy(base_run, tmp_path)
    models = json.loads((run / "models.json").read_text())
    for key in ("weights_sha256", "weights"):
        models["mlp"].pop(key)
    (run / "models.json").write_text(json.dumps(models))
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["attacks"]["fgsm"].pop("reproducible")
    (run / "manifest.json").write_text(json.dumps(manifest))
    baseline = baseline_from_run(run)
    assert baseline.models["mlp"].weights == "unknown" and baseline.models["mlp"].sha256 == ""
    assert not any(c.reproducible for c in baseline.cells)


# -- the comparison itself -------------------------------------------------------------------------------


def test_flips_are_listed_by_data_set_index_with_at_most_20_shown(base_run: Path, tmp_path: Path) -> None:
    run = _copy(base_run, tmp_path)
    lost = _flip(run, "fgsm", count=25, eps=0.0)
    baseline, current = baseline_from_run(base_run), baseline_from_run(run)
    report = compare(current, baseline)
    # 25 of 120 lost is a significant drop too: the item regressed, and its note names the samples
    (item,) = [i for i in report.items if i.eps == 0.0 and i.attack == "fgsm"]
    assert item.status == "regressed"
    assert item.flips is not None and list(item.flips.lost) == lost and item.flips.gained == ()
    assert ", ".join(map(str, lost[:20])) + " and 5 more" in item.note
    assert "lost 25 (samples" in markdown(report) and junit_xml(report).getroot().find(".//failure") is not None
    # the reverse comparison: the same samples gained, a significant rise is a change too
    back = compare(baseline, current)
    (gained,) = [i for i in back.items if i.eps == 0.0 and i.attack == "fgsm"]
    assert gained.status == "changed" and gained.flips is not None
    assert list(gained.flips.gained) == lost and gained.flips.lost == ()
    changed = back.count("changed")
    assert changed >= 1 and back.verdict == f"FAIL: 0 regressed, 0 below floor, {changed} changed"


def test_point_flips_and_their_description() -> None:
    indices = np.array([3, 7, 11, 40])
    flips = point_flips(np.array([True, True, False, False]), np.array([True, False, True, False]), indices)
    assert flips == Flips(lost=(7,), gained=(11,))
    assert flips.describe() == "lost 1 (sample 7); gained 1 (sample 11)"
    many = Flips(lost=tuple(range(22)), gained=())
    assert many.describe().endswith("19 and 2 more)") and many.count == 22


def test_weights_statuses() -> None:
    ref = ModelWeights(sha256=REFERENCE, weights="reference")
    external = ModelWeights(sha256="a" * 16, weights="external")
    unknown = ModelWeights(sha256="", weights="unknown")
    checks = compare_weights(["a", "b", "c", "d"], {"a": ref, "b": external, "c": unknown}, {"a": ref, "b": ref})
    assert [c.status for c in checks] == ["same", "differ", "unknown", "unknown"]
    assert checks[0].note == "a: same weights (reference, sha256 0123456789ab)"
    assert "b: weights differ: the difference includes training variance" in checks[1].note
    assert "weights unknown in the run and baseline" in checks[2].note
    assert [c.status for c in compare_weights(["a"], {"a": ref}, None)] == ["unknown"]


def test_allow_flips_rule_syntax() -> None:
    rules = RULES.validate_python([{"model": "*", "attack": "pgd", "eps": 0.1, "max_flips": 3}, {"max_flips": 0}])
    assert isinstance(rules[0], AllowFlips) and rules[0].max_flips == 3 and rules[0].eps == pytest.approx(0.1)
    assert rules[0].describe() == "*/pgd@0.1 per-sample changes <= 3"
    with pytest.raises(RuleError, match=r"s\.yaml: checks\[0\]\.max_flips\.max_flips: Input should be greater"):
        parse_rules([{"max_flips": -1}], source="s.yaml")
    with pytest.raises(RuleError, match=r"max_flips: expected an integer, got str '3'"):
        parse_rules([{"max_flips": "3"}], source="s.yaml")
    message = r"a check needs 'min' \(a floor\), 'max_drop' \(a tolerance\) or 'max_flips'"
    with pytest.raises(RuleError, match=message):
        parse_rules([{"model": "mlp"}], source="s.yaml")
    raw = {
        "name": "x",
        "dataset": {"name": "digits", "n": 10},
        "models": ["mlp"],
        "attacks": ["fgsm"],
        "epsilons": [0, 0.1],
        "checks": [{"attack": "fgsm", "max_flips": 2}],
    }
    assert validate(raw).checks[0] == AllowFlips(attack="fgsm", max_flips=2)
    with pytest.raises(SuiteError, match=r"checks\[0\]\.max_flips\.colour: unknown field"):
        validate({**raw, "checks": [{"max_flips": 2, "colour": "red"}]})


def test_same_weights_on_other_numerics_compare_statistically(
    base_run: Path, baseline_file: Path, tmp_path: Path
) -> None:
    """Equal weights on another CPU's kernels (measured: a few boundary samples flip under FGSM across AVX2 and
    AVX-512): a single flip does not fail, and the note says why the comparison is not exact."""
    manifest = json.loads((base_run / "manifest.json").read_text())
    assert manifest["numerics"].startswith("torch ")  # bench run records torch, the device and its kernels
    run = _copy(base_run, tmp_path)
    recorded = json.loads((run / "manifest.json").read_text())
    recorded["numerics"] += "; ATEN_CPU_CAPABILITY=avx2"
    (run / "manifest.json").write_text(json.dumps(recorded))
    _flip(run, "fgsm")
    result = _check(run, "--baseline", baseline_file)
    assert result.exit_code == 0, result.output
    assert "same weights, but other numerics" in result.stderr and "ATEN_CPU_CAPABILITY=avx2" in result.stderr
    assert "compared exactly" not in result.stderr
