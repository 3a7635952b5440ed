from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import trained
from typer.testing import CliRunner

from bench.cli import app
from bench.engine import ModelOutputError, RunError, check_logits, run_suite
from bench.rundir import RESULT_COLUMNS, SAMPLE_COLUMNS
from bench.suite import load_suite

TINY = """
name: tiny
seed: 0
dataset: {name: digits, split: test, n: 120}
models: [mlp, lenet]
attacks:
  - fgsm
  - {name: fgsm, label: fgsm_l2, params: {norm: l2}, epsilons: [0, 0.5, 1.0]}
epsilons: [0, 0.1, 0.2, 0.3]
batch_size: 50
tracking: {examples: 4}
"""


@pytest.fixture(scope="module")
def tiny_suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("suite") / "tiny.yaml"
    path.write_text(TINY)
    return path


@pytest.fixture(scope="module")
def tiny_run(tiny_suite: Path, tmp_path_factory: pytest.TempPathFactory):
    return run_suite(load_suite(tiny_suite), out=tmp_path_factory.mktemp("run") / "out", track=False, echo=None)


def test_run_directory_layout(tiny_run) -> None:
    root = tiny_run.run_dir.root
    for name in ("suite.yaml", "manifest.json", "models.json", "results.csv", "results.parquet", "samples.parquet"):
        assert (root / name).is_file(), name
    for cell in ("mlp__fgsm", "mlp__fgsm_l2", "lenet__fgsm", "lenet__fgsm_l2"):
        assert (root / "cells" / cell / "done.json").is_file()
    assert (root / "figures" / "curve_fgsm.png").stat().st_size > 1000
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["status"] == "finished"
    assert manifest["data"]["n"] == 120 and len(manifest["data"]["digest"]) == 16
    assert manifest["versions"]["torch"].startswith("2.14.1")
    assert set(manifest["clean_accuracy"]) == {"mlp", "lenet"}


def test_results_schema_and_semantics(tiny_run) -> None:
    results = pd.read_csv(tiny_run.run_dir.root / "results.csv")
    assert list(results.columns) == RESULT_COLUMNS
    assert len(results) == 2 * (4 + 3)
    for (_model, _attack), rows in results.groupby(["model", "attack"]):
        rows = rows.sort_values("eps")
        assert rows["robust_accuracy"].iloc[0] == pytest.approx(rows["clean_accuracy"].iloc[0])
        assert (np.diff(rows["robust_accuracy"]) <= 1e-12).all()
        assert (rows["robust_accuracy"] <= rows["robust_accuracy_pointwise"] + 1e-12).all()
        assert (rows["ci_low"] <= rows["robust_accuracy"]).all() and (rows["robust_accuracy"] <= rows["ci_high"]).all()
        assert rows["robust_accuracy"].iloc[-1] < rows["clean_accuracy"].iloc[0]
    linf = results[results["attack"] == "fgsm"]
    assert (linf["max_linf"] <= linf["eps"] + 1e-6).all()
    l2 = results[results["attack"] == "fgsm_l2"]
    assert (l2["max_l2"] <= l2["eps"] + 1e-5).all()
    assert json.loads(l2["attack_params"].iloc[0])["norm"] == "l2"
    # one gradient per sample for the whole sweep, spent on the first eps
    first = results[(results["attack"] == "fgsm") & (results["eps"] == 0)]
    assert (first["grad_evals"] == 120).all()
    assert (results[(results["attack"] == "fgsm") & (results["eps"] > 0)]["grad_evals"] == 0).all()


def test_sample_flags_agree_with_results(tiny_run) -> None:
    results = tiny_run.results
    samples = pd.read_parquet(tiny_run.run_dir.root / "samples.parquet")
    assert list(samples.columns) == SAMPLE_COLUMNS
    means = samples.groupby(["model", "attack", "eps"])["correct"].mean()
    for _, row in results.iterrows():
        assert means[(row["model"], row["attack"], row["eps"])] == pytest.approx(row["robust_accuracy"])


def test_same_suite_same_numbers_serial_and_parallel(tiny_suite: Path, tiny_run, tmp_path: Path) -> None:
    again = run_suite(
        load_suite(tiny_suite), out=tmp_path / "parallel", n_jobs=2, track=False, echo=None, exact_workers=True
    )
    cols = [c for c in RESULT_COLUMNS if c != "seconds"]
    pd.testing.assert_frame_equal(tiny_run.results[cols], again.results[cols])


def test_limit_and_n_larger_than_split(tiny_suite: Path, tmp_path: Path) -> None:
    limited = run_suite(load_suite(tiny_suite), out=tmp_path / "lim", limit=10, track=False, echo=None)
    assert set(limited.results["n"]) == {10}
    big = tmp_path / "big.yaml"
    big.write_text(TINY.replace("n: 120", "n: 5000"))
    with pytest.raises(RunError, match=r"dataset\.n: 5000 is larger than the test split of 'digits' \(360 samples\)"):
        run_suite(load_suite(big), out=tmp_path / "big", track=False, echo=None)


def test_probabilities_and_nan_outputs_are_refused() -> None:
    logits = torch.randn(16, 10)
    assert check_logits(logits, model="m", allow_probabilities=False) == []
    with pytest.raises(ModelOutputError, match="look like probabilities"):
        check_logits(logits.softmax(1), model="m", allow_probabilities=False)
    with pytest.raises(ModelOutputError, match="look like log-probabilities"):
        check_logits(logits.log_softmax(1), model="m", allow_probabilities=False)
    with pytest.warns(UserWarning, match="probabilities"):
        assert check_logits(logits.softmax(1), model="m", allow_probabilities=True)
    with pytest.raises(ModelOutputError, match="NaN or infinite"):
        check_logits(torch.full((4, 10), float("nan")), model="m", allow_probabilities=True)


def test_cli_run_prints_summary_and_uses_out_exactly(tiny_suite: Path, tmp_path: Path) -> None:
    out = tmp_path / "exact"
    result = CliRunner().invoke(app, ["run", str(tiny_suite), "--out", str(out), "--no-mlflow", "--limit", "20"])
    assert result.exit_code == 0, result.output
    assert "robust accuracy: tiny (20 samples)" in result.output
    assert "lenet" in result.output and "fgsm_l2" in result.output
    assert (out / "results.csv").is_file()


def test_cli_validate_ls_and_errors(tiny_suite: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["validate", str(tiny_suite)])
    assert ok.exit_code == 0 and "2 models x 2 attacks = 4 cells" in ok.output
    listing = runner.invoke(app, ["ls"])
    assert listing.exit_code == 0
    for name in ("mnist5k", "digits", "mlp", "lenet", "convnet_bn", "fgsm"):
        assert name in listing.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY.replace("models: [mlp, lenet]", "models: [mlpp]"))
    failed = runner.invoke(app, ["validate", str(bad)])
    assert failed.exit_code == 2
    assert "unknown model 'mlpp'" in failed.output and "Traceback" not in failed.output


def test_target_class_drives_every_sample_to_one_class(tmp_path: Path) -> None:
    suite = tmp_path / "target.yaml"
    suite.write_text(
        TINY.replace("models: [mlp, lenet]", "models: [lenet]").replace(
            "  - fgsm\n  - {name: fgsm, label: fgsm_l2, params: {norm: l2}, epsilons: [0, 0.5, 1.0]}",
            "  - {name: pgd, label: to3, params: {targeted: true, steps: 10}, target_class: 3}",
        )
    )
    outcome = run_suite(load_suite(suite), out=tmp_path / "run", track=False, echo=None)
    samples = pd.read_parquet(tmp_path / "run" / "samples.parquet")
    assert set(samples["target"]) == {3}
    rows = outcome.results.sort_values("eps")
    assert json.loads(rows["attack_params"].iloc[0])["target_class"] == 3
    # success = reached class 3, among clean-correct samples not already of class 3
    last = samples[samples["eps"] == rows["eps"].max()]
    eligible = (last["clean_pred"] == last["label"]) & (last["label"] != 3)
    reached = samples[samples["label"] != 3].groupby("index")["adv_pred"].apply(lambda p: bool((p == 3).any()))
    expected = reached[last.loc[eligible, "index"]].mean()
    assert rows["attack_success_rate"].iloc[-1] == pytest.approx(expected)
    # far above the ~1/9 a perturbation that merely fools would land in class 3 by chance
    assert rows["attack_success_rate"].iloc[-1] > 0.3


def test_target_class_errors(tmp_path: Path) -> None:
    from bench.suite import SuiteError

    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY.replace("  - fgsm\n", "  - {name: fgsm, params: {targeted: true}, target_class: 12}\n"))
    with pytest.raises(
        RunError, match=r"attacks\[0\]\.target_class: class 12 does not exist: data set 'digits' has classes 0\.\.9"
    ):
        run_suite(load_suite(bad), out=tmp_path / "run", track=False, echo=None)
    untargeted = tmp_path / "untargeted.yaml"
    untargeted.write_text(TINY.replace("  - fgsm\n", "  - {name: fgsm, target_class: 2}\n"))
    with pytest.raises(SuiteError, match=r"attacks\[0\]\.target_class: only targeted attacks take a target class"):
        load_suite(untargeted)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--device", "tpu"], "device: 'tpu' is not a device (allowed: auto, cpu, cuda, cuda:N)"),
        (["--n-jobs", "0"], "--n-jobs: n_jobs must be a number of workers >= 1, or -1 for all cores"),
    ],
)
def test_bad_run_options_exit_2_without_traceback(tiny_suite: Path, tmp_path: Path, args, message) -> None:
    result = CliRunner().invoke(app, ["run", str(tiny_suite), "--out", str(tmp_path / "r"), "--no-mlflow", *args])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()) and "Traceback" not in result.output


def test_damaged_run_directories_give_clear_errors(tiny_run, tmp_path: Path) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_run.run_dir.root, broken)
    (broken / "manifest.json").write_text("{not json")
    for argv in (["sync", str(broken)], ["baseline", str(broken), "-o", str(tmp_path / "b.json")]):
        result = CliRunner().invoke(app, argv)
        assert result.exit_code == 2, (argv, result.output)
        assert "manifest.json: unreadable manifest" in result.output and "Traceback" not in result.output
    empty = tmp_path / "empty"
    shutil.copytree(tiny_run.run_dir.root, empty)
    (empty / "results.parquet").unlink()
    (empty / "results.csv").write_text("")
    result = CliRunner().invoke(app, ["report", str(empty), "--out", str(tmp_path / "rep")])
    assert result.exit_code == 2, result.output  # emptied after the run: its sha256 is not the recorded one
    assert "results.csv: its sha256" in " ".join(result.output.split()) and "Traceback" not in result.output
    result = CliRunner().invoke(app, ["report", str(empty), "--out", str(tmp_path / "rep"), "--trust-edited"])
    assert result.exit_code == 2, result.output
    assert "unreadable results" in result.output and "Traceback" not in result.output


class _CallSizes(torch.nn.Module):
    """Wraps a model and records the number of samples of every call."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(int(x.shape[0]))
        return self.model(x)


def test_pooled_attacks_get_several_batches_but_model_calls_stay_within_the_batch_size(digits_test) -> None:
    """PGD (pooled) is handed 8 batches at once: after early exit the survivors still fill whole model calls."""
    from bench.attacks import AttackContext, make_attack
    from bench.engine import POOL_BATCHES, evaluate_cell, pool_size

    pgd, fgsm = make_attack("pgd", steps=5, random_start=False), make_attack("fgsm")
    assert pool_size(fgsm, 16, (1, 8, 8)) == 16
    assert pool_size(pgd, 16, (1, 8, 8)) == POOL_BATCHES * 16
    assert pool_size(pgd, 500, (3, 1024, 1024)) == 500  # the byte cap never goes below one batch
    model = _CallSizes(trained("lenet", "digits"))
    data = digits_test.subset(128)
    grid = (0.0, 0.1, 0.2, 0.3)
    arrays, _ = evaluate_cell(model, pgd, data, grid, seed=0, device=torch.device("cpu"), batch_size=16)
    assert max(model.sizes) == 16
    # Early exit shrinks the active set at every eps, yet most calls are still full batches.
    assert sum(s == 16 for s in model.sizes) > 0.8 * len(model.sizes)
    # Pooled chunks attack each sample as batch-by-batch calls do (without random starts the
    # trajectories are the same; only the batch composition of the model calls differs).
    plain = make_attack("pgd", steps=5, random_start=False)
    unpooled = []
    for start in range(0, 128, 16):
        xb, yb = data.x[start : start + 16], data.y[start : start + 16]
        ctx = AttackContext(seed=0)
        swept = plain.sweep(model, xb, yb, grid, ctx=ctx)
        unpooled.append(np.stack([ctx.logits(model, adv).argmax(1).numpy() for _, adv in swept]))
    correct_pooled = (arrays["adv_pred"] == data.y.numpy()[None]).sum(1)
    correct_plain = (np.concatenate(unpooled, axis=1) == data.y.numpy()[None]).sum(1)
    assert np.abs(correct_pooled - correct_plain).max() <= 1
    # A split call gives the gradient of an unsplit one; an empty input stays empty.
    grad, _ = AttackContext(batch_size=16).loss_gradient(model, data.x[:40], data.y[:40])
    whole, _ = AttackContext().loss_gradient(model, data.x[:40], data.y[:40])
    assert torch.allclose(grad, whole, atol=1e-6)
    assert AttackContext(batch_size=16).logits(model, data.x[:0]).shape == (0, 10)


def test_an_attack_limited_to_n_samples_runs_on_the_first_n_and_the_worst_case_covers_only_them(
    tmp_path: Path,
) -> None:
    from reports.tables import worst_case_at

    suite = tmp_path / "n.yaml"
    suite.write_text(
        TINY.replace("models: [mlp, lenet]", "models: [lenet]").replace(
            "  - {name: fgsm, label: fgsm_l2, params: {norm: l2}, epsilons: [0, 0.5, 1.0]}",
            "  - {name: pgd, params: {steps: 5}, n: 30}",
        )
    )
    outcome = run_suite(load_suite(suite), out=tmp_path / "run", track=False, echo=None)
    rows = outcome.results
    assert set(rows.loc[rows["attack"] == "fgsm", "n"]) == {120}
    assert set(rows.loc[rows["attack"] == "pgd", "n"]) == {30}
    samples = pd.read_parquet(tmp_path / "run" / "samples.parquet")
    order = samples.loc[(samples["attack"] == "fgsm") & (samples["eps"] == 0), "index"].tolist()
    pgd_at = samples[(samples["attack"] == "pgd") & (samples["eps"] == 0.2)]
    assert pgd_at["index"].tolist() == order[:30]
    # the worst case over both attacks is over the 30 samples both ran, not 120 with fgsm alone on 90
    both = samples[(samples["eps"] == 0.2) & samples["index"].isin(order[:30])]
    expected = both.groupby("index")["correct"].all().mean()
    got = worst_case_at("lenet", rows[rows["eps"] == 0.2], samples, 0.2)
    assert got.value == pytest.approx(expected)
    pgd_only = rows.loc[(rows["attack"] == "pgd") & (rows["eps"] == 0.2), "robust_accuracy"].item()
    assert got.value <= pgd_only + 1e-12


def test_attack_n_must_be_positive(tiny_suite: Path, tmp_path: Path) -> None:
    from bench.suite import SuiteError

    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY.replace("  - fgsm\n", "  - {name: fgsm, n: 0}\n"))
    with pytest.raises(SuiteError, match=r"attacks\[0\]\.n"):
        load_suite(bad)
