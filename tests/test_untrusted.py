"""Untrusted files: checkpoints, suites, plugin strings and names taken from suites cannot run code or escape.

Each hostile input below would create a marker file if it ever ran; the tests
assert the harness refuses it with a clear error and the marker never appears.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from bench.cli import app
from bench.fsutil import safe_filename
from bench.rundir import RunDir

REPO = Path(__file__).resolve().parent.parent
SOURCES = sorted(p for d in ("bench", "model_zoo", "reports", "scripts") for p in (REPO / d).rglob("*.py"))


def _calls(name: str) -> list[tuple[Path, ast.Call]]:
    """Every call ``<anything>.<name>(...)`` or ``<name>(...)`` in the project's source."""
    found = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Call):
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
                if called == name:
                    found.append((path, node))
    return found


def _keyword(call: ast.Call, name: str) -> object:
    for kw in call.keywords:
        if kw.arg == name and isinstance(kw.value, ast.Constant):
            return kw.value.value
    return None


def test_every_torch_load_is_weights_only() -> None:
    calls = [
        (p, c) for p, c in _calls("load") if isinstance(c.func, ast.Attribute) and ast.unparse(c.func) == "torch.load"
    ]
    assert calls, "no torch.load found: the scan is broken"
    bad = [f"{p.relative_to(REPO)}:{c.lineno}" for p, c in calls if _keyword(c, "weights_only") is not True]
    assert not bad, f"torch.load without weights_only=True at {bad}"


def test_every_numpy_load_refuses_pickles() -> None:
    calls = [(p, c) for p, c in _calls("load") if ast.unparse(c.func) in ("np.load", "numpy.load")]
    assert calls
    bad = [f"{p.relative_to(REPO)}:{c.lineno}" for p, c in calls if _keyword(c, "allow_pickle") is not False]
    assert not bad, f"np.load without allow_pickle=False at {bad}"


@pytest.mark.parametrize("unsafe", ["yaml.load", "yaml.unsafe_load", "yaml.full_load", "pickle.load", "pickle.loads"])
def test_no_unsafe_deserializer(unsafe: str) -> None:
    name = unsafe.split(".")[1]
    hits = [f"{p.relative_to(REPO)}:{c.lineno}" for p, c in _calls(name) if ast.unparse(c.func) == unsafe]
    assert not hits, f"{unsafe} used at {hits}"


class _Payload:
    """Unpickling this runs ``os.system('touch <marker>')``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_malicious_checkpoint_is_never_unpickled(tmp_path: Path) -> None:
    from model_zoo import CheckpointError
    from model_zoo.external import load_external

    marker = tmp_path / "pwned"
    torch.save({"1.weight": _Payload(marker)}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"evil\.pt: .*pickled Python objects \(posix\.system\)"):
        load_external(
            "x", factory="plugins:logits", weights=tmp_path / "evil.pt", input_shape=(1, 8, 8), num_classes=10
        )
    assert not marker.exists()


def test_malicious_cached_checkpoint_is_never_unpickled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkpoint swapped in the cache: `bench run` refuses it and names the file."""
    from bench.data import load_dataset
    from model_zoo import get_model

    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    path = get_model("mlp", "digits", train=load_dataset("digits", "train"), recipe={"epochs": 1}).checkpoint
    marker = tmp_path / "pwned"
    torch.save({"0.weight": _Payload(marker)}, path)
    suite = tmp_path / "s.yaml"
    suite.write_text(
        "name: s\ndataset: {name: digits, n: 10}\nmodels: [{name: mlp, recipe: {epochs: 1}}]\n"
        "attacks: [fgsm]\nepsilons: [0]\n"
    )
    result = CliRunner().invoke(app, ["run", str(suite), "--no-mlflow", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert path.name in result.output and "never unpickled" in result.output
    assert not marker.exists()


def test_suite_yaml_tags_cannot_run_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    suite = tmp_path / "s.yaml"
    suite.write_text(f'name: !!python/object/apply:os.system ["touch {marker}"]\nmodels: [mlp]\n')
    result = CliRunner().invoke(app, ["validate", str(suite)])
    assert result.exit_code == 2
    assert f"{suite}: invalid YAML" in result.output and "python/object/apply:os.system" in result.output
    assert not marker.exists()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("attack", "os:system", "attack plugin 'os:system': module 'os' is not trusted, so it is not imported"),
        ("attack", "os.system", "unknown attack 'os.system'"),
        ("model", "os.system", "must have the form 'package.module:attr'"),
        ("model", "os:sep", "factory 'os:sep': module 'os' is not trusted, so it is not imported"),
        ("model", "os:system", "`bench run --trust os` or BENCH_TRUSTED_MODULES=os"),
    ],
)
def test_plugins_only_through_module_attr_of_the_right_kind(
    tmp_path: Path, field: str, value: str, message: str
) -> None:
    """A plugin string must be ``module:attr`` and name an Attack subclass / a callable factory; nothing else runs.

    Only modules the user trusts are imported (issue 17: ``os:system`` ran a shell
    command); everything else is refused before anything is imported or called.
    """
    marker = tmp_path / "pwned"
    command = f"touch {marker}"
    if field == "attack":
        body = f"models: [mlp]\nattacks: [{{name: '{value}', params: {{command: '{command}'}}}}]\n"
        argv = ["validate"]
    else:
        body = f"models: [{{name: m, factory: '{value}', params: {{command: '{command}'}}}}]\nattacks: [fgsm]\n"
        argv = ["run", "--no-mlflow", "--out", str(tmp_path / "run")]
    suite = tmp_path / "s.yaml"
    suite.write_text(f"name: s\ndataset: {{name: digits, n: 10}}\n{body}epsilons: [0]\n")
    result = CliRunner().invoke(app, [argv[0], str(suite), *argv[1:]])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert not marker.exists()


HOSTILE = ["../../escape", "/etc/passwd", "a/b", "..", ".", "", "art:DeepFool", "nul\x00byte", "-rf", "a\\b", "é/../x"]


@pytest.mark.parametrize("name", HOSTILE)
def test_safe_filename_stays_in_its_folder(tmp_path: Path, name: str) -> None:
    safe = safe_filename(name)
    assert "/" not in safe and "\\" not in safe and "\x00" not in safe
    assert safe not in ("", ".", "..") and not safe.startswith((".", "-"))
    run = RunDir(tmp_path / "run")
    assert run.cell(f"m__{name}").resolve().parent == (tmp_path / "run" / "cells").resolve()


@given(st.text(max_size=60))
def test_safe_filename_is_injective_and_keeps_safe_names(name: str) -> None:
    safe = safe_filename(name)
    assert "/" not in safe and "\x00" not in safe and safe not in ("", ".", "..")
    assert safe_filename(safe) == safe  # a sanitized name is safe as it is
    if name and all(c.isascii() and (c.isalnum() or c in "_.-") for c in name) and name[0] not in ".-":
        assert safe == name
    else:
        assert safe != name


@given(st.text(max_size=20), st.text(max_size=20))
def test_different_names_never_share_a_file(a: str, b: str) -> None:
    if a != b:
        assert safe_filename(a) != safe_filename(b)


def test_plugin_attack_id_with_colon_stays_inside_the_run_directory(tmp_path: Path) -> None:
    """An attack named by plugin string (``module:Class``) becomes a cell folder and a figure name safely."""
    suite = tmp_path / "s.yaml"
    suite.write_text(
        "name: s\ndataset: {name: digits, n: 20}\nmodels: [{name: lin, factory: 'plugins:logits'}]\n"
        "attacks: ['bench.attacks.fgsm:FGSM']\nepsilons: [0, 0.1]\ntracking: {enabled: false}\n"
    )
    run = tmp_path / "run"
    first = CliRunner().invoke(app, ["run", str(suite), "--no-mlflow", "--out", str(run)])
    assert first.exit_code == 0, first.output
    cell = RunDir(run).cell("lin__bench.attacks.fgsm:FGSM")
    assert cell.parent == run / "cells" and ":" not in cell.name and (cell / "done.json").is_file()
    assert (run / "figures" / f"curve_{safe_filename('bench.attacks.fgsm:FGSM')}.png").is_file()
    files = [p.resolve() for p in run.rglob("*")]
    assert files and all(p.is_relative_to(run.resolve()) for p in files)
    assert not any(":" in p.name for p in files)
    # The finished cell is found again under its sanitized name: resuming runs nothing.
    again = CliRunner().invoke(app, ["run", str(suite), "--no-mlflow", "--resume", str(run)])
    assert again.exit_code == 0, again.output
    assert "running 0 cell(s)" in again.output
