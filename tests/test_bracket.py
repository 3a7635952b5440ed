"""Certified robustness beside attacked robustness (issue 28): certified training, and the bracket in a real run's
results, report, MLflow mirror and gate, with the soundness check that fails a run on a certifier bug."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from bench.certified import CERTIFIED_COLUMNS, read_certified, read_certified_samples
from bench.certify import CERTIFIERS, CertifierAbilities, CertifyResult, make_certifier
from bench.certify.base import Certifier
from bench.cli import app
from bench.data import load_dataset
from bench.engine import RunError, run_suite
from bench.engine.certify_cell import load_certify_cell
from bench.rundir import RunDir
from bench.runtrust import EditedRunError
from bench.suite import SuiteError, load_suite, validate
from bench.types import Bounds
from reports.tables import leaderboard
from tests.conftest import SHORT_CROWN, trained

SUITE = f"""
name: bracket
dataset: {{name: digits, split: test, n: 80}}
models:
  - mlp
  - {{name: lenet_crown, recipe: {json.dumps(SHORT_CROWN)}}}
attacks:
  - fgsm
  - pgd
  - {{name: pgd, label: pgd_l2, params: {{norm: l2}}, epsilons: [0, 0.25, 0.5]}}
certify:
  - ibp
  - crown
  - {{name: smoothing, params: {{n: 200, sigma: 0.25}}, epsilons: [0, 0.25, 0.5]}}
epsilons: [0, 0.05, 0.1]
batch_size: 40
tracking: {{enabled: false}}
checks:
  - {{model: lenet_crown, certifier: crown, metric: certified, eps: 0.1, min: 0.3}}
"""


@pytest.fixture(scope="module")
def bracket_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bracket")
    (root / "bracket.yaml").write_text(SUITE)
    run_suite(load_suite(root / "bracket.yaml"), out=root / "run", track=False, echo=None)
    return root / "run"


def test_certified_training_raises_certified_accuracy_over_standard_training() -> None:
    """The same net and schedule on the digits, with and without CROWN-IBP: only certified training certifies.

    Measured over seeds 0-2: standard 0.003-0.011 certified at eps 0.1, CROWN-IBP 0.63-0.67 (clean 0.91-0.93)."""
    test = load_dataset("digits", "test")
    standard = trained("lenet_crown", **{**SHORT_CROWN, "adv": "none", "adv_eps": 0.0, "adv_ramp_epochs": 0})
    certified = trained("lenet_crown", **SHORT_CROWN)
    ibp_trained = trained("lenet_crown", **SHORT_CROWN, adv="ibp")
    crown = make_certifier("crown")

    def rate(model: nn.Module) -> float:
        return float(crown.certify(model, test.x, test.y, 0.1).certified.float().mean())

    assert float((certified(test.x).argmax(1) == test.y).float().mean()) >= 0.85
    assert rate(certified) >= rate(standard) + 0.4
    assert rate(ibp_trained) >= rate(standard) + 0.3


def test_the_bracket_in_the_results(bracket_run: Path) -> None:
    run = RunDir(bracket_run)
    certified = read_certified(run)
    assert certified is not None and list(certified.columns) == CERTIFIED_COLUMNS
    # 2 models x (ibp and crown over 3 eps + smoothing over 3 radii)
    assert len(certified) == 2 * (3 + 3 + 3)
    bounded = certified[certified["kind"] == "bound"]
    # the bracket on a real run: the certified fraction never exceeds what the attacks left robust
    assert (bounded["certified_accuracy"] <= bounded["attacked_accuracy"] + 1e-12).all()
    assert np.allclose(bounded["gap"], bounded["attacked_accuracy"] - bounded["certified_accuracy"])
    assert set(bounded["attacked_by"]) == {"fgsm, pgd"}  # the linf attacks, not the l2 one
    assert (certified["certified_ci_low"] <= certified["certified_accuracy"]).all()
    assert (certified["certified_accuracy"] <= certified["certified_ci_high"]).all()
    smoothing = certified[certified["certifier"] == "smoothing"]
    assert set(smoothing["kind"]) == {"smoothed"} and set(smoothing["attacked_by"]) == {"pgd_l2"}
    crown = certified[(certified["model"] == "lenet_crown") & (certified["certifier"] == "crown")]
    ibp = certified[(certified["model"] == "lenet_crown") & (certified["certifier"] == "ibp")]
    assert (crown["certified_accuracy"].to_numpy() >= ibp["certified_accuracy"].to_numpy()).all()
    assert float(crown[crown["eps"] == 0.1]["certified_accuracy"].iloc[0]) >= 0.3

    # per sample: certified only where the clean prediction is right, one row per (model, certifier, eps, sample)
    samples = read_certified_samples(run)
    assert samples is not None and len(samples) == len(certified) * 80
    flags = run.read_samples()
    clean = flags[(flags["attack"] == "fgsm") & (flags["eps"] == 0)].set_index(["model", "index"])
    proven = samples[samples["certified"]].set_index(["model", "index"])
    assert (clean.loc[proven.index, "clean_pred"] == clean.loc[proven.index, "label"]).all()

    # results.csv: each attack row's lower side is the best bound certificate at its model, eps and norm
    results = run.read_results()
    for row in results[results["norm"] == "linf"].itertuples():
        best = bounded[(bounded["model"] == row.model) & (bounded["eps"] == row.eps)]["certified_accuracy"].max()
        assert row.certified_accuracy == pytest.approx(best)
    assert results[results["attack"] == "pgd_l2"]["certified_accuracy"].isna().all()  # smoothing is no bound
    board = leaderboard(results, flags)
    assert board.attrs["certified"] == ["linf"]
    for row in board.itertuples():
        assert row.gap_linf == pytest.approx(row.robust_linf - row.certified_linf)


def test_the_bracket_in_the_report(bracket_run: Path) -> None:
    text = (bracket_run / "report" / "report.md").read_text()
    section = text.split("### Certified robustness: the bracket", 1)[1].split("### Sanity flags", 1)[0]
    assert "- mlp:" in section and "- lenet_crown:" in section
    assert "a probabilistic certificate for the smoothed model" in section
    assert "![the bracket per model, linf (bound certificates)" in section
    assert (bracket_run / "report" / "figures" / "r1-bracket-linf-bound.png").read_bytes().startswith(b"\x89PNG")
    assert "linf certified @ 0.1" in text  # the leaderboard's column
    html = (bracket_run / "report" / "report.html").read_text()
    assert 'data-section="bracket"' in html and "Certified robustness: the bracket" in html


def test_the_gate_checks_certified_accuracy(bracket_run: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    baseline = tmp_path / "base.json"
    made = runner.invoke(app, ["baseline", str(bracket_run), "-o", str(baseline)])
    assert made.exit_code == 0, made.output
    cells = json.loads(baseline.read_text())["cells"]
    assert {(c["attack"], c["kind"]) for c in cells if c["model"] == "lenet_crown"} == {
        ("fgsm", "attack"),
        ("pgd", "attack"),
        ("pgd_l2", "attack"),
        ("ibp", "certified"),
        ("crown", "certified"),
        ("smoothing", "certified"),
    }
    # the suite's own rule (certified >= 0.3 at 0.1) holds; a floor above the certified fraction fails the gate
    passed = runner.invoke(app, ["check", str(bracket_run), "--baseline", str(baseline)])
    assert passed.exit_code == 0, passed.output
    value = float(read_certified(RunDir(bracket_run)).query("model == 'mlp' and certifier == 'ibp' and eps == 0.1")
                  ["certified_accuracy"].iloc[0])  # fmt: skip
    failed = runner.invoke(
        app, ["check", str(bracket_run), "--floor", f"mlp/ibp@0.1:certified>={min(1.0, value + 0.05):.3f}"]
    )
    assert failed.exit_code == 1 and "below floor" in failed.output and "certified eps=0.1" in failed.output
    # a certified floor names a certifier: one naming an attack matches nothing and says so
    wrong = runner.invoke(app, ["check", str(bracket_run), "--floor", "mlp/pgd@0.1:certified>=0.1"])
    assert wrong.exit_code == 2 and "matches no checked cell" in wrong.output


def test_the_bracket_in_mlflow(bracket_run: Path, mlflow_uri: str) -> None:
    import mlflow

    from bench.tracking import sync_run_dir

    parent = sync_run_dir(bracket_run)
    client = mlflow.MlflowClient(mlflow_uri)
    experiment = client.get_run(parent).info.experiment_id
    children = client.search_runs([experiment], filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    by_name = {run.info.run_name: run for run in children}
    assert {"lenet_crown · crown", "lenet_crown · ibp", "mlp · smoothing"} <= set(by_name)
    certified = client.get_metric_history(by_name["lenet_crown · crown"].info.run_id, "certified_accuracy_linf")
    attacked = client.get_metric_history(by_name["lenet_crown · pgd"].info.run_id, "robust_accuracy_linf")
    assert sorted(m.step for m in certified) == sorted(m.step for m in attacked) == [0, 50, 100]
    table = read_certified(RunDir(bracket_run)).query("model == 'lenet_crown' and certifier == 'crown'")
    assert {m.step: m.value for m in certified} == pytest.approx(
        {round(e * 1000): v for e, v in zip(table["eps"], table["certified_accuracy"], strict=True)}
    )
    smoothing = client.get_metric_history(by_name["mlp · smoothing"].info.run_id, "certified_accuracy_l2")
    assert len(smoothing) == 3


def test_a_finished_certification_cell_is_read_back_and_checked(bracket_run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(bracket_run, copy)
    outcome, edited = load_certify_cell(RunDir(copy), "lenet_crown__crown")
    assert edited is None
    certified = read_certified(RunDir(bracket_run))
    mine = certified[(certified["model"] == "lenet_crown") & (certified["certifier"] == "crown")]
    assert outcome.rows["certified_accuracy"].tolist() == mine["certified_accuracy"].tolist()
    rows = copy / "cells" / "lenet_crown__crown" / "rows.parquet"
    table = pd.read_parquet(rows)
    table.loc[0, "certified_accuracy"] = 0.5
    table.to_parquet(rows, index=False)
    with pytest.raises(EditedRunError, match=r"rows\.parquet"):
        load_certify_cell(RunDir(copy), "lenet_crown__crown")
    _, note = load_certify_cell(RunDir(copy), "lenet_crown__crown", trust_edited=True)
    assert note is not None and "rows.parquet" in note
    rows.write_bytes(b"PAR1 not a parquet file PAR1")  # accepted as edited, yet unreadable: one line, no traceback
    with pytest.raises(RunError, match=r"rows\.parquet: unreadable cell results"):
        load_certify_cell(RunDir(copy), "lenet_crown__crown", trust_edited=True)


@dataclass(frozen=True, kw_only=True)
class _ClaimsEverything(Certifier):
    """A broken certifier: proves every correctly classified sample robust at any eps."""

    name: ClassVar[str] = "claims_everything"

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, bounds: Bounds) -> CertifyResult:
        correct = model(x).argmax(1) == y
        nan = torch.full((len(y),), float("nan"))
        return CertifyResult(certified=correct, margin_lower=torch.ones(len(y)), radius=nan)


def test_the_run_fails_when_an_attack_breaks_a_certified_sample(tmp_path: Path) -> None:
    suite = tmp_path / "unsound.yaml"
    suite.write_text(
        "name: unsound\ndataset: {name: digits, n: 40}\nmodels: [lenet]\nattacks: [pgd]\nepsilons: [0, 0.1]\n"
        "certify: [claims_everything]\ntracking: {enabled: false}\n"
    )
    abilities = CertifierAbilities(kind="bound", layers=("any",), art="none (a test's broken certifier)")
    with (
        CERTIFIERS.registered("claims_everything", _ClaimsEverything, abilities=abilities),
        pytest.raises(RunError) as failure,
    ):
        run_suite(load_suite(suite), out=tmp_path / "run", track=False, echo=None)
    message = str(failure.value)
    assert "soundness check failed: certifier 'claims_everything' proved sample" in message
    assert "of model 'lenet' robust at linf eps 0.1, but attack 'pgd' misclassified it" in message
    # nothing computed is lost: both cells are on disk, no results table claims anything
    assert (tmp_path / "run" / "cells" / "lenet__claims_everything" / "done.json").exists()
    assert (tmp_path / "run" / "cells" / "lenet__pgd" / "done.json").exists()
    assert not (tmp_path / "run" / "results.csv").exists()


def test_suite_certify_errors_name_the_field() -> None:
    base = {"name": "x", "models": ["lenet"], "attacks": ["fgsm"], "epsilons": [0, 0.1]}
    cases = [
        ({"certify": ["crwon"]}, "certify[0].name: unknown certifier 'crwon' (known: crown, ibp, smoothing)"),
        ({"certify": [{"name": "crown", "params": {"intermediate": "full"}}]}, "allowed: auto, crown, ibp"),
        ({"certify": [{"name": "smoothing", "params": {"norm": "linf"}}]}, "norm 'linf' is not allowed (allowed: l2)"),
        ({"certify": [{"name": "smoothing", "params": {"n": "many"}}]}, "certify[0].params.n"),
        ({"certify": [{"name": "crown", "label": "fgsm"}]}, "'fgsm' is also an attack's id"),
        ({"certify": ["ibp", "ibp"]}, "certify: 'ibp' appears twice"),
    ]
    for extra, expected in cases:
        with pytest.raises(SuiteError) as failure:
            validate({**base, **extra}, source="s.yaml")
        assert expected in str(failure.value), (extra, str(failure.value))
    # the digest of a suite without certifiers is unchanged by the new field
    assert validate(base).digest == validate({**base, "certify": []}).digest


def test_the_bracket_section_renders_in_chromium(bracket_run: Path, tmp_path: Path) -> None:
    if shutil.which("chromium") is None and shutil.which("chromium-browser") is None:
        pytest.skip("Debian's chromium is not installed (bash scripts/setup-system.sh installs it)")
    pytest.importorskip("websocket", reason="websocket-client (dev extra) drives Chromium")
    from tests.test_report_browser import PAGE_FACTS, Chromium, _screenshot

    browser = Chromium(tmp_path / "profile")
    try:
        for domain in ("Runtime", "Log", "Page"):
            browser.call(f"{domain}.enable")
        browser.call("Page.navigate", url=(bracket_run / "report" / "report.html").resolve().as_uri())
        browser.wait_for("Page.loadEventFired")
        facts = browser.evaluate(PAGE_FACTS)
        bracket = browser.evaluate(
            """(() => ({
              rows: document.querySelectorAll('#run-1-bracket table.bracket tbody tr').length,
              bands: [...document.querySelectorAll('#run-1-bracket img')].filter(i => i.naturalWidth > 0).length,
              sentences: document.querySelectorAll('#run-1-bracket .bracket-sentences li').length,
              certifiedColumns: [...document.querySelectorAll('#run-1-leaderboard th')]
                .filter(th => th.textContent.includes('certified')).length,
            }))()"""
        )
        assert facts["sections"][:2] == ["leaderboard", "bracket"]
        assert facts["decoded"] == facts["images"] and facts["overflowing"] == 0
        # 18 certified rows; a linf (bound) and an l2 (smoothed) band; one sentence per model and kind
        assert bracket == {"rows": 18, "bands": 2, "sentences": 4, "certifiedColumns": 1}
        assert browser.problems() == []
        _screenshot(browser, int(facts["height"]), "report-bracket.png")
    finally:
        browser.close()


def test_an_edited_certified_table_is_refused(bracket_run: Path, tmp_path: Path) -> None:
    from reports.sources import load_run

    copy = tmp_path / "copy"
    shutil.copytree(bracket_run, copy)
    table = copy / "certified.csv"
    table.write_text(table.read_text().replace(",bound,linf,0.1,", ",bound,linf,0.1,", 1) + "\n")
    with pytest.raises(EditedRunError, match=r"certified\.csv"):
        load_run(copy)
    rows = pd.read_csv(bracket_run / "certified.csv")
    rows.loc[0, "certified_accuracy"] = 1.5
    rows.to_csv(table, index=False)
    (copy / "certified.parquet").unlink()
    with pytest.raises(Exception, match=r"certified_accuracy: 1\.5 is not in \[0, 1\]"):
        load_run(copy, trust_edited=True)


def test_a_model_a_certifier_cannot_bound_is_refused_before_any_cell(tmp_path: Path) -> None:
    suite = tmp_path / "quantized.yaml"
    suite.write_text(
        "name: quantized\ndataset: {name: digits, n: 20}\nmodels: [mlp, lenet_quantized]\nattacks: [fgsm]\n"
        "epsilons: [0, 0.1]\ncertify: [crown, smoothing]\ntracking: {enabled: false}\n"
    )
    with pytest.raises(RunError) as failure:
        run_suite(load_suite(suite), out=tmp_path / "run", track=False, echo=None)
    assert str(failure.value) == (
        "certify: model 'lenet_quantized': crown: cannot bound layer 0 (a non-differentiable layer); it bounds chains "
        "(nn.Sequential) of: AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, Dropout, Flatten, Identity, Linear, "
        "MaxPool2d, Normalize, ReLU, Sequential"
    )
    assert not (tmp_path / "run" / "cells").exists()  # refused before the first cell, smoothing's model is fine


def test_certification_cells_run_on_the_suites_backend_with_the_same_certificates(tmp_path: Path) -> None:
    """The certification cells go through the attack cells' parallel backend (bench.engine.parallel.run_tasks);
    smoothing's noise is seeded per sample block, so two threads give the serial run's certificates."""
    suite = tmp_path / "parallel.yaml"
    suite.write_text(
        "name: parallel\ndataset: {name: digits, n: 40}\nmodels: [mlp]\nattacks: [fgsm, pgd]\nepsilons: [0, 0.05]\n"
        "certify: [ibp, {name: smoothing, params: {n: 60}, epsilons: [0, 0.25]}]\nbatch_size: 20\n"
        "tracking: {enabled: false}\n"
    )
    serial = run_suite(load_suite(suite), out=tmp_path / "serial", track=False, echo=None)
    threaded = run_suite(
        load_suite(suite), out=tmp_path / "threads", track=False, echo=None, backend="threading", n_jobs=2,
        exact_workers=True,
    )  # fmt: skip
    assert threaded.manifest["workers"]["n_jobs"] == 2
    columns = [c for c in CERTIFIED_COLUMNS if c != "seconds"]
    one, two = read_certified(serial.run_dir), read_certified(threaded.run_dir)
    pd.testing.assert_frame_equal(one[columns], two[columns])
    pd.testing.assert_frame_equal(read_certified_samples(serial.run_dir), read_certified_samples(threaded.run_dir))
