"""Every shipped suite validates through the CLI; the seed-weights suite and (slow) the Fashion-MNIST suite run."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from bench.cli import app
from bench.data.files import DEBIAN_FASHION_MNIST
from bench.suite import load_suite

SUITES = Path(__file__).resolve().parent.parent / "suites"
SHIPPED = sorted(SUITES.glob("*.yaml"))
SEED_SUITES = ["seed_mnist_fgsm", "seed_cifar10_fgsm", "seed_mlp_weights", "seed_fooling"]


def test_the_issue_suites_are_shipped() -> None:
    names = {p.stem for p in SHIPPED}
    assert {*SEED_SUITES, "fashion_mnist"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_suite_validates(path: Path) -> None:
    result = CliRunner().invoke(app, ["validate", "--no-data", str(path)])
    assert result.exit_code == 0, result.output
    suite = load_suite(path)
    assert f"{path}: ok ({len(suite.models)} models x {len(suite.attacks)} attacks" in result.output
    assert suite.name == path.stem
    assert suite.description.strip()


@pytest.mark.parametrize("name", ["seed_mnist_fgsm", "seed_cifar10_fgsm"])
def test_validate_says_where_it_looked_for_missing_data_files(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Suites on local torchvision data: without the files, validate fails and names the root and files it needs."""
    monkeypatch.delenv("BENCH_MNIST_ROOT", raising=False)
    monkeypatch.delenv("BENCH_CIFAR10_ROOT", raising=False)
    result = CliRunner().invoke(
        app, ["validate", str(SUITES / f"{name}.yaml"), "--set", f"dataset.options.root={tmp_path}"]
    )
    assert result.exit_code == 2, result.output
    assert f"{name}.yaml: dataset:" in result.output and str(tmp_path) in result.output.replace("\n", "")


@pytest.mark.parametrize("name", SEED_SUITES)
def test_seed_suites_document_the_epsilon_conversion(name: str) -> None:
    description = load_suite(SUITES / f"{name}.yaml").description
    assert "eps_pixels = eps_normalized x std" in description


def test_seed_mnist_and_cifar_grids_cover_the_seed_grid_in_pixels() -> None:
    """The notebooks' eps 0, 0.05, ..., 0.3 in [-1, 1] units are eps x 0.5 in pixels: every one is a row."""
    seed_grid = [0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3]
    for name in ("seed_mnist_fgsm", "seed_cifar10_fgsm", "seed_mlp_weights"):
        grid = load_suite(SUITES / f"{name}.yaml").epsilons
        assert all(any(abs(e * 0.5 - g) < 1e-12 for g in grid) for e in seed_grid), name
        assert max(grid) == pytest.approx(0.3)


def test_seed_mlp_weights_suite_runs(tmp_path: Path) -> None:
    """The shipped .npz perceptron loads through the suite and FGSM behaves like FGSM on it."""
    result = CliRunner().invoke(
        app, ["run", str(SUITES / "seed_mlp_weights.yaml"), "--out", str(tmp_path / "run"), "--no-mlflow"]
    )
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(tmp_path / "run" / "results.csv").sort_values("eps")
    assert set(rows["model"]) == {"perceptron"} and len(rows) == 10
    clean = rows["clean_accuracy"].iloc[0]
    assert clean > 0.9  # a 784-200-10 perceptron on held-out digits; random weights would give ~0.1
    assert rows["robust_accuracy"].iloc[0] == pytest.approx(clean)
    assert rows["robust_accuracy"].is_monotonic_decreasing
    assert rows["robust_accuracy"].iloc[-1] < 0.2  # eps 0.3 in pixels breaks an undefended MLP
    assert (rows["max_linf"] <= rows["eps"] + 1e-6).all()


@pytest.mark.slow
@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(), reason="Debian package dataset-fashion-mnist is not installed")
def test_fashion_mnist_suite_runs_with_limit(tmp_path: Path) -> None:
    """The shipped suite end to end on the real data, first 100 test images (trains the zoo once: minutes)."""
    result = CliRunner().invoke(
        app,
        ["run", str(SUITES / "fashion_mnist.yaml"), "--limit", "100", "--out", str(tmp_path / "run"), "--no-mlflow"],
    )
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(tmp_path / "run" / "results.csv")
    assert set(rows["dataset"]) == {"fashion-mnist"} and set(rows["n"]) == {100}
    assert set(rows["attack"]) == {"fgsm", "pgd"}
    assert set(rows["model"]) == {"mlp", "mlp3", "lenet", "cnn", "convnet", "convnet_bn"}
    assert (rows["clean_accuracy"] > 0.7).all()
    strongest = rows[rows["eps"] == rows["eps"].max()]
    by_attack = strongest.groupby("attack")["robust_accuracy"].mean()
    assert by_attack["pgd"] <= by_attack["fgsm"] + 1e-9


BASELINES = sorted((SUITES.parent / "baselines").glob("*.json"))


@pytest.mark.parametrize("path", BASELINES, ids=[p.stem for p in BASELINES])
def test_committed_baselines_match_their_shipped_suite(path: Path) -> None:
    """A shipped suite edited without remaking its baseline would only be 'noted' by bench check: catch it here."""
    from bench.gate.baseline import read_baseline

    baseline = read_baseline(path)
    suite = load_suite(SUITES / f"{baseline.suite}.yaml")
    assert baseline.suite_digest == suite.digest, f"remake {path.name} (docs/gate.md)"
    assert {(c.model, c.attack) for c in baseline.cells} == {(m.id, a.id) for m in suite.models for a in suite.attacks}
