"""Hostile suite files (issue 17, items 1-3): cells that cannot share a folder, strict types, no code from a suite.

Every case runs the real ``bench`` CLI in-process (typer's ``CliRunner``) on
real files; modules that a suite names are real files that leave a marker
when imported, so "refused before import" is observed, not assumed.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from bench.cli import app
from bench.fsutil import safe_filename
from bench.rundir import cell_folder, cell_id
from bench.suite import expand, load_suite

REPO = Path(__file__).resolve().parent.parent
BASE = {
    "name": "hostile",
    "dataset": {"name": "digits", "n": 20},
    "models": ["mlp"],
    "attacks": ["fgsm"],
    "epsilons": [0, 0.1],
    "tracking": {"enabled": False},
}


def write(folder: Path, name: str = "suite.yaml", **over: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(yaml.safe_dump({**BASE, **over}, sort_keys=False))
    return path


def bench(*argv: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in argv])
    output = " ".join(result.output.split())
    assert "Traceback" not in result.output, result.output
    return result.exit_code, output


# -- 1. cell identity -------------------------------------------------------------------------------------------


def test_the_colliding_suite_of_the_issue_is_refused(tmp_path: Path) -> None:
    """mlp 'a' x fgsm 'b__c' and mlp 'a__b' x fgsm 'c' were both cell a__b__c: one cell's results were lost."""
    path = write(
        tmp_path,
        models=[{"name": "mlp", "label": "a"}, {"name": "mlp", "label": "a__b"}],
        attacks=[{"name": "fgsm", "label": "b__c"}, {"name": "fgsm", "label": "c"}],
    )
    code, out = bench("validate", path)
    assert code == 2, out
    assert f"{path}: models[1]: label: model id 'a__b' contains '__'" in out
    assert "attacks[0]: label: attack id 'b__c' contains '__'" in out


def test_a_model_id_ending_in_underscore_is_refused(tmp_path: Path) -> None:
    """'x_' + '__' + 'y' reads as 'x' + '__' + '_y': the first '__' must be the separator."""
    path = write(tmp_path, models=[{"name": "mlp", "label": "x_"}])
    code, out = bench("validate", path)
    assert code == 2, out
    assert "models[0]: label: model id 'x_' ends with '_'" in out


def test_cells_that_share_a_folder_after_escaping_or_case_are_refused(tmp_path: Path) -> None:
    # A label crafted to equal the escaped folder of a plugin attack's cell ('m__bench.attacks.fgsm-FGSM-<hash>').
    plugin = "bench.attacks.fgsm:FGSM"
    crafted = safe_filename(cell_id("m", plugin)).removeprefix("m__")
    path = write(
        tmp_path / "a",
        models=[{"name": "mlp", "label": "m"}],
        attacks=[plugin, {"name": "fgsm", "label": crafted}],
    )
    code, out = bench("validate", path)
    assert code == 2, out
    assert f"would share the folder cells/{cell_folder(cell_id('m', crafted))}/" in out
    # Names differing only in case share a folder on macOS and Windows.
    path = write(tmp_path / "b", models=[{"name": "mlp", "label": "Net"}, {"name": "mlp", "label": "net"}])
    code, out = bench("validate", path)
    assert code == 2, out
    assert "cells 'Net__fgsm' and 'net__fgsm' would share the folder" in out


def test_distinct_cells_get_distinct_folders_and_one_naming_function(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        models=[{"name": "mlp", "label": "a_b"}, {"name": "mlp", "label": "a"}],
        attacks=[{"name": "fgsm", "label": "b_c"}, {"name": "fgsm", "label": "c"}, "bench.attacks.fgsm:FGSM"],
    )
    cells = expand(load_suite(path))
    assert [c.id for c in cells] == [cell_id(c.model.id, c.attack.id) for c in cells]
    assert len({cell_folder(c.id).casefold() for c in cells}) == len(cells) == 6


def test_no_module_builds_a_cell_name_by_hand() -> None:
    """Every place that names a cell calls bench.rundir.cell_id (a second spelling could drift from the first)."""
    by_hand = re.compile(r"\}__\{|\{[^{}]*\}__")
    offenders = [
        f"{p.relative_to(REPO)}:{i}"
        for d in ("bench", "reports")
        for p in sorted((REPO / d).rglob("*.py"))
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if by_hand.search(line) and "CELL_SEPARATOR" not in line
    ]
    assert offenders == []


# -- 2. strict types --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("over", "message"),
    [
        (
            {"attacks": [{"name": "fgsm", "params": {"targeted": "false"}}]},
            "attacks[0].params.targeted: expected a boolean (true or false), got str 'false'",
        ),
        ({"attacks": [{"name": "pgd", "params": {"steps": "1_0"}}]}, "attacks[0].params.steps: expected an integer"),
        (
            {"attacks": [{"name": "pgd", "params": {"steps": 10.0}}]},
            "attacks[0].params.steps: expected an integer, got float 10.0",
        ),
        (
            {"attacks": [{"name": "pgd", "params": {"rel_step_size": "0.1"}}]},
            "attacks[0].params.rel_step_size: expected a number",
        ),
        (
            {"attacks": [{"name": "pgd", "params": {"early_stop": 1}}]},
            "attacks[0].params.early_stop: expected a boolean (true or false), got int 1",
        ),
        ({"dataset": {"name": "digits", "n": "1_0"}}, "dataset.n: expected an integer, got str '1_0'"),
        ({"seed": "3"}, "seed: expected an integer, got str '3'"),
        ({"tracking": {"enabled": "no"}}, "tracking.enabled: expected a boolean (true or false), got str 'no'"),
        ({"attacks": [{"name": "fgsm", "minimal_eps": "true"}]}, "attacks[0].minimal_eps: expected a boolean"),
        ({"models": [{"name": "mlp", "recipe": {"epochs": "2"}}]}, "models[0].recipe.epochs: expected an integer"),
        ({"checks": [{"min": "0.5"}]}, "checks[0].floor.min: expected a number, got str '0.5'"),
        ({"checks": [{"max_drop": True}]}, "checks[0].max_drop.max_drop: expected a number, got bool True"),
    ],
)
def test_no_string_coercion(tmp_path: Path, over: dict[str, object], message: str) -> None:
    path = write(tmp_path, **over)
    code, out = bench("validate", path)
    assert code == 2, out
    assert f"{path}: {message}" in out


def test_documented_forms_still_validate(tmp_path: Path) -> None:
    """Floats take ints, eps takes 'k/255', enum values are strings, booleans are booleans."""
    path = write(
        tmp_path,
        epsilons=[0, "8/255", 1],
        attacks=[
            {"name": "pgd", "params": {"steps": 3, "rel_step_size": 1, "norm": "l2", "targeted": False}},
            {"name": "bim", "label": "bim8", "epsilons": ["2/255", 0.05]},
        ],
        checks=[{"min": 0, "eps": "8/255"}, {"max_drop": 1}],
    )
    code, out = bench("validate", path)
    assert code == 0, out


def test_a_command_line_floor_is_a_number_too(tmp_path: Path) -> None:
    from bench.suite import RuleError, parse_floor

    assert parse_floor("mlp/fgsm@8/255>=.5").min == 0.5
    for bad in ("1_0", "nan", "inf", "0x1"):
        with pytest.raises(RuleError, match=rf"min: expected a number between 0 and 1, got '{bad}'"):
            parse_floor(f"mlp/fgsm>={bad}")


# -- 3. no code from a suite file -------------------------------------------------------------------------------

FACTORY = """\
from pathlib import Path
from torch import nn
Path({marker!r}).write_text("imported")


def tiny(input_shape, num_classes):
    c, h, w = input_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, num_classes))


class NotAModel:
    pass
"""


def _module(folder: Path, name: str, marker: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.py").write_text(FACTORY.format(marker=str(marker)))


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    """An importable module outside the suite's folder that leaves a marker when imported."""
    name = f"hostile_{tmp_path.name.replace('-', '_')}"
    marker = tmp_path / "imported"
    _module(tmp_path / "site", name, marker)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delenv("BENCH_TRUSTED_MODULES", raising=False)
    yield name, marker
    sys.modules.pop(name, None)


def test_os_system_does_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = write(tmp_path, models=[{"name": "m", "factory": "os:system", "params": {"command": f"touch {marker}"}}])
    for argv in (("validate", path), ("run", path, "--no-mlflow", "--out", tmp_path / "run")):
        code, out = bench(*argv)
        assert code == 2, out
        assert "factory 'os:system': module 'os' is not trusted, so it is not imported" in out
    # Trusting os is not enough: os.system is no Python function or nn.Module class.
    code, out = bench("validate", path, "--trust", "os")
    assert code == 2, out
    assert "is a builtin_function_or_method, not a callable returning a model" in out
    assert not marker.exists()


def test_an_untrusted_module_is_refused_before_import(tmp_path: Path, elsewhere: tuple[str, Path]) -> None:
    name, marker = elsewhere
    path = write(tmp_path / "suite", models=[{"name": "m", "factory": f"{name}:tiny"}])
    code, out = bench("validate", path)
    assert code == 2, out
    assert f"module {name!r} is not trusted" in out
    assert f"`bench run --trust {name}` or BENCH_TRUSTED_MODULES={name}" in out
    assert not marker.exists()  # refused before import
    attack = write(tmp_path / "attack", attacks=[f"{name}:NotAModel"])
    code, out = bench("validate", attack)
    assert code == 2, out
    assert f"attacks[0].name: attack plugin '{name}:NotAModel': module {name!r} is not trusted" in out
    assert not marker.exists()


def test_trust_option_and_environment(
    tmp_path: Path, elsewhere: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    name, marker = elsewhere
    path = write(tmp_path / "suite", models=[{"name": "m", "factory": f"{name}:tiny"}])
    code, out = bench("validate", path, "--trust", name)
    assert code == 0, out
    assert marker.exists()
    monkeypatch.setenv("BENCH_TRUSTED_MODULES", f"other.pkg, {name}")
    code, out = bench("validate", path)
    assert code == 0, out
    bad = write(tmp_path / "bad", models=[{"name": "m", "factory": f"{name}:NotAModel"}])
    code, out = bench("validate", bad)
    assert code == 2, out
    assert f"factory '{name}:NotAModel' is the class NotAModel, not a torch.nn.Module subclass" in out


def test_a_module_in_the_suite_folder_is_trusted_and_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BENCH_TRUSTED_MODULES", raising=False)
    name = f"nets_{tmp_path.name.replace('-', '_')}"
    folder = tmp_path / "suite"
    _module(folder / "pkg", name, tmp_path / "imported")
    (folder / "pkg" / "__init__.py").write_text("")
    _module(folder, name, tmp_path / "imported-too")
    path = write(
        folder,
        models=[{"name": "a", "factory": f"{name}:tiny"}, {"name": "b", "factory": f"pkg.{name}:tiny"}],
    )
    try:
        code, out = bench("run", path, "--no-mlflow", "--out", tmp_path / "run", "--quiet")
        assert code == 0, out
        assert (tmp_path / "run" / "results.csv").is_file()
    finally:
        sys.modules.pop(name, None)
        sys.modules.pop("pkg", None)
        sys.modules.pop(f"pkg.{name}", None)


def test_a_file_named_like_an_installed_module_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pty.py next to the suite: `import pty` would load the standard library's, and pty.spawn would run."""
    monkeypatch.delenv("BENCH_TRUSTED_MODULES", raising=False)
    marker = tmp_path / "spawned"
    (tmp_path / "pty.py").write_text("def spawn(**kwargs):\n    pass\n")
    path = write(tmp_path, models=[{"name": "m", "factory": "pty:spawn", "params": {"argv": f"touch {marker}"}}])
    code, out = bench("validate", path)
    assert code == 2, out
    assert "pty.py has the name of an installed module 'pty', which an import would load instead" in out
    assert not marker.exists()
