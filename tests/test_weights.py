"""Reference weights (model_zoo/weights.py, model_zoo/reference.py, `bench zoo`): identity by SHA-256, files that
cannot run code, and the weights' identity in models.json, the manifest, MLflow and the report."""

from __future__ import annotations

import hashlib
import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from bench.cli import app
from bench.data import load_dataset
from model_zoo import CheckpointError, build_model, get_model, reference
from model_zoo.weights import WeightsError, read_weights, weights_digest, write_weights

QUICKSTART_MODELS = ("mlp", "lenet", "cnn", "lenet_at", "lenet_quantized")


def _mnist_train():
    return load_dataset("mnist5k", "train")


def test_digest_is_the_file_sha256_and_the_same_in_another_process(tmp_path: Path) -> None:
    torch.manual_seed(3)
    model = build_model("lenet", (1, 28, 28), 10)
    path = tmp_path / "lenet.safetensors"
    digest = write_weights(model, path)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest() == weights_digest(model)
    code = (
        "import torch; from model_zoo import build_model; from model_zoo.weights import weights_digest; "
        "torch.manual_seed(3); print(weights_digest(build_model('lenet', (1, 28, 28), 10)))"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert other.stdout.strip() == digest
    state, read_digest = read_weights(path, expected_sha256=digest)
    assert read_digest == digest
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("name", QUICKSTART_MODELS)
def test_shipped_references_load_and_match_their_digests(name: str) -> None:
    trained = get_model(name, "mnist5k", train=_mnist_train())
    entry = reference.reference_for(trained.key)
    assert entry is not None and entry.file is not None, "every shipped mnist5k suite model has a shipped reference"
    assert trained.weights == "reference" and trained.weights_sha256 == entry.sha256
    assert trained.checkpoint == reference.REFERENCE_DIR / entry.file and not trained.trained_now
    assert weights_digest(trained.model) == entry.sha256  # what was loaded is what the index names
    assert entry.bytes == (reference.REFERENCE_DIR / entry.file).stat().st_size < 2 * 1024 * 1024


def test_a_wrong_digest_is_refused_in_one_line_naming_the_file_and_both_digests(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    digest = write_weights(build_model("mlp", (1, 8, 8), 10), path)
    expected = "0" * 64
    with pytest.raises(WeightsError) as info:
        read_weights(path, expected_sha256=expected)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and digest in message and expected in message


def test_a_tampered_imported_reference_is_refused_by_get_model(tmp_path: Path, monkeypatch) -> None:
    """An imported file edited later (one byte) is refused when a run loads it, not silently used."""
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    entry = next(e for e in reference.entries() if e.model == "lenet" and e.dataset == "mnist5k")
    shipped = reference.REFERENCE_DIR / str(entry.file)
    monkeypatch.setattr(type(entry), "locate", lambda self: self.store_path)  # pretend it is not shipped
    store = entry.store_path
    store.parent.mkdir(parents=True)
    data = bytearray(shipped.read_bytes())
    data[-1] ^= 1
    store.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as info:
        get_model("lenet", "mnist5k", train=_mnist_train())
    message = str(info.value)
    assert "\n" not in message and str(store) in message and entry.sha256 in message
    assert hashlib.sha256(bytes(data)).hexdigest() in message


class _Evil:
    """Unpickling this writes a marker file: proof that a loader ran the pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "ran"))


@pytest.mark.parametrize("kind", ["pickle", "torch.save"])
def test_a_pickle_disguised_as_weights_is_refused_unread(tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "marker"
    evil = tmp_path / "weights.safetensors"
    if kind == "pickle":
        evil.write_bytes(pickle.dumps({"0.weight": _Evil(marker)}))
    else:
        torch.save({"0.weight": _Evil(marker)}, evil)
    with pytest.raises(WeightsError, match=r"not a safetensors weights file: it is a .*it was not loaded"):
        read_weights(evil)
    result = CliRunner().invoke(app, ["zoo", "import", str(evil)])
    assert result.exit_code == 2 and "not a safetensors weights file" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not marker.exists()


def test_export_import_verify_round_trip(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    runner = CliRunner()
    out = tmp_path / "lenet.safetensors"
    result = runner.invoke(app, ["zoo", "export", "lenet", "-o", str(out)])
    assert result.exit_code == 0, result.output
    entry = next(e for e in reference.entries() if e.model == "lenet" and e.dataset == "mnist5k")
    assert hashlib.sha256(out.read_bytes()).hexdigest() == entry.sha256
    result = runner.invoke(app, ["zoo", "verify", str(out)])
    assert result.exit_code == 0 and "the reference of lenet on mnist5k" in result.output
    result = runner.invoke(app, ["zoo", "import", str(out)])
    assert result.exit_code == 0 and entry.store_path.read_bytes() == out.read_bytes()
    # weights that are no reference's: identified as such, and not imported
    other = tmp_path / "other.safetensors"
    digest = write_weights(build_model("lenet", (1, 28, 28), 10), other)
    result = runner.invoke(app, ["zoo", "verify", str(other)])
    assert result.exit_code == 1 and f"sha256 {digest} is not a recorded reference" in result.output
    result = runner.invoke(app, ["zoo", "import", str(other)])
    assert result.exit_code == 2 and "not the digest of any reference weights" in result.output
    assert not (reference.store_dir() / f"{digest}.safetensors").exists()
    result = runner.invoke(app, ["zoo", "verify"])
    assert result.exit_code == 0 and "ok   lenet on mnist5k" in result.output


SUITE = """
name: weights-identity
dataset: {name: mnist5k, split: test, n: 40}
models:
  - mlp
  - {name: mlp, label: mlp_short, recipe: {epochs: 1}}
attacks: [fgsm]
epsilons: [0, 0.1]
tracking: {experiment: weights-identity, examples: 2}
"""


@pytest.mark.mlflow_server
def test_reference_and_retrained_weights_are_marked_everywhere(tmp_path: Path, mlflow_uri: str) -> None:
    """models.json, the manifest, MLflow (parent and nested runs, a tag and a param), the report and the
    closing lines of `bench run` say which model ran on the reference weights and which was retrained."""
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE)
    result = CliRunner().invoke(app, ["run", str(suite), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    models = json.loads((tmp_path / "run" / "models.json").read_text())
    assert models["mlp"]["weights"] == "reference" and models["mlp_short"]["weights"] == "retrained"
    assert "no reference weights for this recipe" in models["mlp_short"]["weights_note"]
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert {k: v["kind"] for k, v in manifest["weights"].items()} == {"mlp": "reference", "mlp_short": "retrained"}
    digest = models["mlp"]["weights_sha256"]
    assert f"reference weights: mlp {digest[:12]}" in result.output and "RETRAINED weights: mlp_short" in result.output

    client = MlflowClient(mlflow_uri)
    exp = client.get_experiment_by_name("weights-identity")
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert parent.data.params["weights.mlp"] == f"reference sha256:{digest}"
    assert parent.data.tags["bench.weights.mlp"] == "reference"
    assert parent.data.tags["bench.weights.mlp_short"] == "retrained"
    for child in (r for r in runs if "mlflow.parentRunId" in r.data.tags):
        kind = "reference" if child.data.tags["bench.model"] == "mlp" else "retrained"
        assert child.data.tags["weights"] == child.data.params["weights"] == kind
        assert child.data.params["weights_sha256"] == models[child.data.tags["bench.model"]]["weights_sha256"]

    report = (tmp_path / "run" / "report" / "report.md").read_text()
    assert f"weights reference {digest[:12]}" in report and "weights RETRAINED" in report
    html = (tmp_path / "run" / "report" / "report.html").read_text()
    assert f"reference {digest[:12]}" in html and "RETRAINED" in html


def test_a_suite_can_ask_for_retrained_weights(tmp_path: Path) -> None:
    suite = tmp_path / "suite.yaml"
    one_model = SUITE.replace("  - {name: mlp, label: mlp_short, recipe: {epochs: 1}}\n", "")
    suite.write_text(one_model + "weights: retrain\n")
    result = CliRunner().invoke(app, ["run", str(suite), "--out", str(tmp_path / "run"), "--no-mlflow"])
    assert result.exit_code == 0, result.output
    info = json.loads((tmp_path / "run" / "models.json").read_text())["mlp"]
    assert Path(info["checkpoint"]).suffix == ".pt"  # the checkpoint cache, not the shipped reference file
    entry = reference.reference_for(info["cache_key"])
    assert entry is not None
    # trained here by the recipe: "reference" only when bit-identical (a CPU that rounds training alike)
    if info["weights_sha256"] == entry.sha256:
        assert info["weights"] == "reference" and "bit-identical to the reference" in info["weights_note"]
    else:
        assert info["weights"] == "retrained" and "as the suite asks (weights: retrain)" in info["weights_note"]
    bad = CliRunner().invoke(app, ["validate", str(suite), "--set", "weights=latest"])
    assert bad.exit_code == 2 and "weights" in bad.output and "'reference'" in bad.output


def test_an_exported_reference_runs_as_external_weights_with_its_digest(tmp_path: Path) -> None:
    """`bench zoo export` output is a weights file a suite can name (`weights: x.safetensors`); the run records
    its full digest, equal to the reference's, so the gate can tell the weights are the same."""
    out = tmp_path / "lenet.safetensors"
    assert CliRunner().invoke(app, ["zoo", "export", "lenet", "-o", str(out)]).exit_code == 0
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        "name: external-safetensors\ndataset: {name: mnist5k, n: 50}\n"
        "models:\n  - lenet\n  - {name: lenet, label: lenet_file, weights: lenet.safetensors}\n"
        "attacks: [fgsm]\nepsilons: [0, 0.1]\n"
    )
    result = CliRunner().invoke(app, ["run", str(suite), "--out", str(tmp_path / "run"), "--no-mlflow"])
    assert result.exit_code == 0, result.output
    models = json.loads((tmp_path / "run" / "models.json").read_text())
    assert models["lenet_file"]["weights"] == "external"
    assert models["lenet_file"]["weights_sha256"] == models["lenet"]["weights_sha256"]
    results = json.loads((tmp_path / "run" / "manifest.json").read_text())["clean_accuracy"]
    assert results["lenet_file"] == results["lenet"]
