"""Bad input through the real CLI: each case exits 2 with one message naming the file, the field and what is allowed.

The cases are the troubleshooting table of docs/troubleshooting.md. Every one runs ``bench``
in-process through typer's ``CliRunner`` on real files (suites, weights,
checkpoints, data roots) and models built by the factories of
``tests/plugins.py``; nothing is mocked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from typer.testing import CliRunner

from bench.cli import app

BASE: dict[str, Any] = {
    "name": "bad",
    "dataset": {"name": "digits", "n": 20},
    "models": [{"name": "lin", "factory": "plugins:logits"}],
    "attacks": ["fgsm"],
    "epsilons": [0, 0.1],
    "tracking": {"enabled": False},
}


def suite(**over: Any) -> str:
    """BASE with top-level fields replaced (``None`` removes a field), as YAML text."""
    data = {**BASE, **over}
    return yaml.safe_dump({k: v for k, v in data.items() if v is not None}, sort_keys=False)


def model(**fields: Any) -> str:
    return suite(models=[fields])


def attack(**fields: Any) -> str:
    return suite(attacks=[fields])


Setup = Callable[[Path], None]


@dataclass(frozen=True)
class Case:
    id: str
    text: str  # the suite file's content (suite.yaml in a fresh folder)
    expect: tuple[str, ...]  # fragments of the message (whitespace-normalized), in addition to the file name
    command: str = "validate"  # validate: `bench validate suite.yaml`; run: `bench run suite.yaml --out ...`
    setup: Setup | None = None
    names: str = "suite.yaml"  # the file the message must name
    argv: tuple[str, ...] = field(default_factory=tuple)  # extra arguments for `run`


def _save_state(tmp: Path, name: str, state: dict[str, torch.Tensor]) -> None:
    (tmp / "w").mkdir(exist_ok=True)
    torch.save(state, tmp / "w" / name)


def _wrong_shapes(tmp: Path) -> None:
    _save_state(tmp, "lin.pt", {"1.weight": torch.zeros(10, 32), "1.bias": torch.zeros(10)})


def _garbage_weights(tmp: Path) -> None:
    (tmp / "w").mkdir(exist_ok=True)
    (tmp / "w" / "lin.pt").write_bytes(b"this is not a zip archive nor a pickle")


def _pickled_object(tmp: Path) -> None:
    # A full pickle of a module, not a state_dict: weights_only=True refuses to unpickle it.
    (tmp / "w").mkdir()
    torch.save(torch.nn.Linear(64, 10), tmp / "w" / "lin.pt")


def _missing_keys(tmp: Path) -> None:
    _save_state(tmp, "lin.pt", {"1.weight": torch.zeros(10, 64)})


def _out_under_a_file(tmp: Path) -> None:
    # A regular file where the run's parent folder should be: unwritable even for root (chmod is not).
    (tmp / "ro").write_text("a file, not a folder")


def _include_cycle(tmp: Path) -> None:
    (tmp / "a.yaml").write_text("include: suite.yaml\n")


def _mnist_root_without_files(tmp: Path) -> None:
    (tmp / "empty-root").mkdir()


def _corrupt_cached_checkpoint(tmp: Path) -> None:
    """Train a one-epoch MLP into this test's own cache, then truncate its checkpoint."""
    from bench.data import load_dataset
    from model_zoo import get_model

    trained = get_model("mlp", "digits", train=load_dataset("digits", "train"), recipe={"epochs": 1})
    data = trained.checkpoint.read_bytes()
    trained.checkpoint.write_bytes(data[: len(data) // 3])


CASES = [
    # -- reading the file -------------------------------------------------------------------
    Case("invalid-yaml", "name: bad\nmodels: [mlp\n", ("invalid YAML at line", "column")),
    Case("tab-indented-yaml", "name: bad\nmodels:\n\t- mlp\n", ("invalid YAML at line 3",)),
    Case("empty-file", "", ("the suite file is empty",)),
    Case("not-a-mapping", "- mlp\n- lenet\n", ("a suite must be a mapping of fields, got list",)),
    Case("include-missing", suite(include="nope.yaml"), ("include: file 'nope.yaml' not found",)),
    Case("include-cycle", suite(include="a.yaml"), ("include cycle",), setup=_include_cycle),
    # -- schema ----------------------------------------------------------------------------
    Case("unknown-top-level-key", suite(epsilon=[0.1]), ("epsilon: unknown field",)),
    Case("unknown-dataset-key", suite(dataset={"name": "digits", "size": 20}), ("dataset.size: unknown field",)),
    Case("unknown-attack-key", attack(name="fgsm", parms={"norm": "l2"}), ("attacks[0].parms: unknown field",)),
    Case("missing-models", suite(models=None), ("models: Field required",)),
    Case("wrong-type-seed", suite(seed="zero"), ("seed: expected an integer, got str 'zero'",)),
    Case(
        "wrong-type-n",
        suite(dataset={"name": "digits", "n": "many"}),
        ("dataset.n: expected an integer, got str 'many'",),
    ),
    Case("wrong-type-epsilons", suite(epsilons="0.1"), ("epsilons: expected a list, got str '0.1'",)),
    Case("n-zero", suite(dataset={"name": "digits", "n": 0}), ("dataset.n: Input should be greater than 0",)),
    Case(
        "split-not-allowed",
        suite(dataset={"name": "digits", "split": "valid"}),
        ("dataset.split: allowed values are 'train' or 'test'",),
    ),
    Case("device-not-allowed", suite(device="tpu"), ("device: allowed values are 'auto', 'cpu' or 'cuda'",)),
    Case("backend-not-allowed", suite(backend="spark"), ("backend: allowed values are 'loky', 'threading' or 'dask'",)),
    Case("batch-size-zero", suite(batch_size=0), ("batch_size: Input should be greater than 0",)),
    Case(
        "examples-too-many",
        suite(tracking={"enabled": False, "examples": 100}),
        ("tracking.examples: Input should be less than or equal to 64",),
    ),
    Case(
        "label-path-traversal",
        suite(attacks=[{"name": "fgsm", "label": "../../etc"}]),
        ("attacks[0].label: label '../../etc' may contain only letters, digits",),
    ),
    Case(
        "duplicate-model",
        suite(models=["mlp", "mlp"]),
        ("models: 'mlp' appears twice; give one of them a distinct 'label'",),
    ),
    # -- names -------------------------------------------------------------------------------
    Case(
        "unknown-dataset",
        suite(dataset={"name": "digit"}),
        ("dataset.name: unknown data set 'digit'", "did you mean 'digits'"),
    ),
    Case("unknown-model", suite(models=["lenett"]), ("models[0].name: unknown model 'lenett'", "did you mean 'lenet'")),
    Case("unknown-attack", suite(attacks=["fgms"]), ("attacks[0].name: unknown attack 'fgms'", "did you mean 'fgsm'")),
    Case("unknown-art-attack", suite(attacks=["art:DeepFoo"]), ("attacks[0].name:", "DeepFool")),
    Case(
        "unknown-attack-param",
        attack(name="fgsm", params={"steps": 10}),
        ("attacks[0].params: attack 'fgsm' has no parameter 'steps' (allowed:", "norm"),
    ),
    Case("bad-norm", attack(name="fgsm", params={"norm": "l3"}), ("attacks[0].params:", "l3", "linf")),
    Case(
        "bad-target-mode",
        attack(name="fgsm", params={"targeted": True, "target_mode": "closest"}),
        ("attacks[0].params: fgsm: target_mode 'closest' is not allowed (allowed: random, least_likely, given)",),
    ),
    Case(
        "target-mode-given",
        attack(name="fgsm", params={"targeted": True, "target_mode": "given"}),
        ("attacks[0].params.target_mode: 'given' needs a target_class", "(or use target_mode random or least_likely)"),
    ),
    Case(
        "target-class-untargeted",
        attack(name="fgsm", target_class=3),
        ("attacks[0].target_class: only targeted attacks take a target class", "params.targeted: true"),
    ),
    Case(
        "target-class-negative",
        attack(name="fgsm", params={"targeted": True}, target_class=-1),
        ("attacks[0].target_class:", "greater than or equal to 0"),
    ),
    Case(
        "target-class-missing",
        attack(name="fgsm", params={"targeted": True}, target_class=12),
        ("attacks[0].target_class: class 12 does not exist: data set 'digits' has classes 0..9",),
        command="run",
    ),
    Case(
        "unknown-recipe-field",
        suite(models=[{"name": "mlp", "recipe": {"epochz": 2}}]),
        ("models[0].recipe:", "epochz"),
    ),
    Case(
        "minimal-eps-unsupported",
        attack(name="uniform_noise", minimal_eps=True),
        ("attacks[0].minimal_eps: not available for attack 'uniform_noise' (allowed: ",),
    ),
    # -- epsilons -----------------------------------------------------------------------------
    Case("negative-eps", suite(epsilons=[0, -0.1]), ("epsilons[1]: epsilon must be >= 0, got -0.1",)),
    Case("nan-eps", suite(epsilons=[0, float("nan")]), ("epsilons[1]: epsilon must be finite",)),
    Case("inf-eps-fraction", suite(epsilons=["8/0"]), ("epsilons[0]: epsilon '8/0' divides by zero",)),
    Case(
        "text-eps",
        suite(epsilons=["eight"]),
        ("epsilons[0]: epsilon 'eight' is neither a number nor a fraction like '8/255'",),
    ),
    Case("bool-eps", suite(epsilons=[True]), ("epsilons[0]: epsilon must be a number or 'k/255', got boolean True",)),
    Case("empty-eps", suite(epsilons=[]), ("epsilons: the epsilon list is empty; give at least one epsilon",)),
    Case(
        "linf-eps-out-of-bounds",
        suite(epsilons=[0, 0.3, 2]),
        ("epsilons: 2 out of bounds for norm linf (allowed: 0 <= eps <= 1, the width of the pixel range",),
    ),
    Case(
        "l0-fraction-out-of-bounds",
        attack(name="salt_pepper", epsilons=[0, 1.5]),
        ("attacks[0].epsilons: 1.5 out of bounds for norm l0 (allowed: 0 <= eps <= 1, a fraction of the pixel",),
    ),
    Case(
        "l2-eps-out-of-bounds",
        attack(name="fgsm", params={"norm": "l2"}, epsilons=[0, 2.0, 9.0]),
        ("attacks[0].epsilons: 9 out of bounds for norm l2 (allowed: 0 <= eps <= 8, the L2 diameter of 1x8x8 inputs)",),
        command="run",
    ),
    Case(
        "patch-larger-than-image",
        attack(name="occlusion", epsilons=[0, 12]),
        ("attacks[0].epsilons: 12 out of bounds for norm patch (allowed: a patch side of 0 to 8 pixels)",),
        command="run",
    ),
    # -- data --------------------------------------------------------------------------------
    Case(
        "n-larger-than-split",
        suite(dataset={"name": "digits", "n": 5000}),
        ("dataset.n: 5000 is larger than the test split of 'digits' (360 samples)",),
        command="run",
    ),
    Case(
        "offset-past-split",
        suite(dataset={"name": "digits", "offset": 360}),
        ("dataset.offset: 360 is not below the size of the test split of 'digits' (360 samples)",),
        command="run",
    ),
    Case(
        "missing-data-root",
        suite(dataset={"name": "mnist", "n": 20, "options": {"root": "{tmp}/empty-root"}}),
        ("empty-root", "t10k-images-idx3-ubyte"),
        command="run",
        setup=_mnist_root_without_files,
    ),
    # -- models ------------------------------------------------------------------------------
    Case(
        "factory-not-module-attr",
        model(name="m", factory="plugins.logits"),
        ("models[0].factory: factory plugin 'plugins.logits' must have the form 'package.module:attr'",),
    ),
    Case(
        "factory-module-missing",
        model(name="m", factory="plugins.no_such:net"),  # trusted (conftest), yet not there
        ("models[0].factory: factory plugin 'plugins.no_such:net': cannot import module 'plugins.no_such'",),
    ),
    Case(
        "weights-unknown-type",
        model(name="m", factory="plugins:logits", weights="w.bin"),
        ("models[0].weights:", "unknown file type '.bin' (allowed: .pt, .pth, .npz, .safetensors)"),
    ),
    Case(
        "weights-missing", model(name="m", factory="plugins:logits", weights="w/none.pt"), ("models[0].weights: file",)
    ),
    Case(
        "weights-wrong-shapes",
        model(name="m", factory="plugins:logits", weights="w/lin.pt"),
        ("lin.pt: tensor '1.weight' has shape (10, 32), the architecture expects (10, 64)",),
        command="run",
        setup=_wrong_shapes,
        names="lin.pt",
    ),
    Case(
        "weights-missing-tensor",
        model(name="m", factory="plugins:logits", weights="w/lin.pt"),
        ("lin.pt: does not match the architecture (missing: 1.bias; unexpected: none)",),
        command="run",
        setup=_missing_keys,
        names="lin.pt",
    ),
    Case(
        "weights-corrupt",
        model(name="m", factory="plugins:logits", weights="w/lin.pt"),
        ("lin.pt: cannot be read as a weights-only state_dict",),
        command="run",
        setup=_garbage_weights,
        names="lin.pt",
    ),
    Case(
        "weights-pickled-module",
        model(name="m", factory="plugins:logits", weights="w/lin.pt"),
        ("lin.pt: cannot be read as a weights-only state_dict: it holds pickled Python objects", "never unpickled"),
        command="run",
        setup=_pickled_object,
        names="lin.pt",
    ),
    Case(
        "corrupt-cached-checkpoint",
        suite(models=[{"name": "mlp", "recipe": {"epochs": 1}}]),
        ("cannot be read as a weights-only state_dict", "it is the cached checkpoint of 'mlp' on 'digits': delete"),
        command="run",
        setup=_corrupt_cached_checkpoint,
        names=".pt",
    ),
    Case(
        "model-returns-probabilities",
        model(name="soft", factory="plugins:probabilities"),
        ("model 'soft' outputs look like probabilities", "set 'allow_probabilities: true' in the suite"),
        command="run",
    ),
    Case(
        "model-returns-nan",
        model(name="nan", factory="plugins:nan_logits"),
        ("model 'nan' returned NaN or infinite outputs on clean inputs",),
        command="run",
    ),
    Case(
        "model-wrong-class-count",
        model(name="three", factory="plugins:wrong_classes"),
        ("model 'three' returns outputs of shape (3,) per sample; data set 'digits' has 10 classes",),
        command="run",
    ),
    Case(
        "model-random-in-eval-mode",
        model(name="noisy", factory="plugins:random_forward"),
        ("model 'noisy' gives different outputs for two identical calls in eval mode",),
        command="run",
    ),
    # -- output ------------------------------------------------------------------------------
    Case(
        "unwritable-output-dir",
        suite(),
        ("output directory", "ro/run: not writable (Not a directory)"),
        command="run",
        setup=_out_under_a_file,
        argv=("--out", "{tmp}/ro/run"),
    ),
    Case(
        "resume-not-a-run-dir",
        suite(),
        ("--resume", "not a run directory (manifest.json missing)"),
        command="run",
        setup=lambda tmp: (tmp / "notrun").mkdir(),
        argv=("--resume", "{tmp}/notrun"),
    ),
]


def _normalized(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_exits_2_with_a_clear_message(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if case.setup is _corrupt_cached_checkpoint:
        monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))  # never corrupt the shared test cache
    if case.setup is not None:
        case.setup(tmp_path)
    path = tmp_path / "suite.yaml"
    path.write_text(case.text.replace("{tmp}", str(tmp_path)))
    if case.command == "validate":
        argv = ["validate", str(path)]
    else:
        extra = [a.replace("{tmp}", str(tmp_path)) for a in case.argv] or ["--out", str(tmp_path / "run")]
        argv = ["run", str(path), "--no-mlflow", *extra]
    result = CliRunner().invoke(app, argv)
    output = _normalized(result.output)
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # no uncaught exception
    assert "Traceback" not in result.output
    assert output.startswith("error:") or "\nerror:" in result.output, result.output
    assert case.names in output, f"message does not name {case.names}: {result.output}"
    for fragment in case.expect:
        assert _normalized(fragment) in output, f"{fragment!r} not in: {result.output}"


def test_at_least_thirty_distinct_cases() -> None:
    assert len({c.id for c in CASES}) == len(CASES) >= 30


def test_bad_input_in_a_subprocess_prints_no_traceback(tmp_path: Path) -> None:
    """The installed console script (not CliRunner): stderr carries the message, exit status 2."""
    import subprocess
    import sys

    path = tmp_path / "suite.yaml"
    path.write_text(suite(epsilons=[0, -1]))
    bench = Path(sys.executable).with_name("bench")
    proc = subprocess.run([str(bench), "validate", str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr + proc.stdout
    assert f"{path}: epsilons[1]: epsilon must be >= 0, got -1" in _normalized(proc.stderr)


def test_model_left_in_training_mode_is_evaluated_in_eval_mode(tmp_path: Path, digits_test) -> None:
    """A factory returns BatchNorm + Dropout in training mode: the run switches it to eval and records that."""
    import json

    import plugins

    path = tmp_path / "suite.yaml"
    path.write_text(
        suite(models=[{"name": "bn", "factory": "plugins:train_mode_bn"}], dataset={"name": "digits", "n": 60})
    )
    result = CliRunner().invoke(app, ["run", str(path), "--no-mlflow", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    info = json.loads((tmp_path / "run" / "models.json").read_text())["bn"]
    assert info["eval_mode"] is True
    assert info["mode_dependent_layers"] == ["1 (BatchNorm2d)", "4 (Dropout)"]
    reference = plugins.train_mode_bn(digits_test.input_shape, digits_test.num_classes).eval()
    with torch.no_grad():
        expected = float((reference(digits_test.x[:60]).argmax(1) == digits_test.y[:60]).float().mean())
        in_train_mode = plugins.train_mode_bn(digits_test.input_shape, digits_test.num_classes)(digits_test.x[:60])
    assert info["clean_accuracy"] == pytest.approx(expected)
    assert not torch.allclose(in_train_mode, reference(digits_test.x[:60]))  # the switch changes the outputs


def test_target_class_that_does_not_exist(digits_test) -> None:
    """Explicit targets exist in the Python API only; a class outside 0..9 is refused before any step."""
    import plugins

    from bench.attacks import AttackError, make_attack

    model = plugins.logits(digits_test.input_shape, digits_test.num_classes)
    fgsm = make_attack("fgsm", targeted=True, target_mode="given")
    x, y = digits_test.x[:4], digits_test.y[:4]
    with pytest.raises(AttackError, match=r"target class 10 does not exist: the model has classes 0\.\.9"):
        fgsm(model, x, y, 0.1, target=torch.tensor([1, 2, 10, 3]))
