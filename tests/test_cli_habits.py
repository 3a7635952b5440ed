"""CLI habits (issue #14): --version, flags as flags, --set, a torch-free ls and help, validate's disk checks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from bench import __version__
from bench.cli import COMMANDS, app, fast_path, overrides
from bench.cli import catalog as catalog_module
from bench.suite import SuiteError

runner = CliRunner()
QUICKSTART = Path(__file__).resolve().parents[1] / "suites" / "quickstart.yaml"


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)


def test_version_help_and_ls_import_no_torch() -> None:
    code = (
        "import sys, contextlib, io\n"
        "from bench.cli import main\n"
        "for args in (['--version'], ['--help'], [], ['ls']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "        try:\n"
        "            main(args)\n"
        "        except SystemExit as exc:\n"
        "            assert exc.code in ((0, None) if args else (2,)), (args, exc.code)\n"
        "    print(args, len(out.getvalue()))\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "assert 'bench.attacks' not in sys.modules\n"
    )
    done = _python(code)
    assert done.returncode == 0, done.stderr


def test_version_prints_the_package_version() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.cli", "--version"], capture_output=True, text=True, timeout=120, check=False
    )
    assert (done.returncode, done.stdout.strip()) == (0, f"bench {__version__}")


def test_static_command_table_matches_the_app() -> None:
    group = typer.main.get_command(app)
    assert sorted(COMMANDS) == sorted(group.list_commands(None))  # type: ignore[arg-type]
    help_text = runner.invoke(app, ["--help"]).output
    for name in COMMANDS:
        assert name in help_text


@pytest.mark.parametrize(
    ("args", "path"),
    [
        ([], "help"),
        (["--help"], "help"),
        (["--version"], "version"),
        (["ls"], "ls"),
        (["--debug", "ls"], "ls"),
        (["run", "--help"], None),
        (["run", "x.yaml"], None),
        (["--debug"], None),
    ],
)
def test_fast_path(args: list[str], path: str | None) -> None:
    assert fast_path(args) == path


def test_flags_show_as_flags_and_run_help_names_bench_report() -> None:
    out = runner.invoke(app, ["run", "--help"]).output
    assert "<bool>" not in out
    assert "  --no-mlflow " in out and "--quiet" in out
    assert "bench report RUN_DIR" in " ".join(out.split())


def test_catalog_equals_the_live_registries() -> None:
    stored = json.loads(catalog_module.PATH.read_text(encoding="utf-8"))
    assert stored == json.loads(catalog_module.dumps(catalog_module.build())), (
        "bench/cli/catalog.json is stale: run `python -m bench.cli.catalog`"
    )


def test_ls_shows_norms_and_parameters_without_rst_quoting() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.cli", "ls"], capture_output=True, text=True, timeout=120, check=True
    )
    assert "``" not in done.stdout and ":class:" not in done.stdout
    pgd = next(line for line in done.stdout.splitlines() if line.strip().startswith("pgd "))
    assert "linf, l2" in pgd and "random_start=true" in pgd and "steps=40" in done.stdout
    assert any(line.strip().startswith("mnist5k ") for line in done.stdout.splitlines())


def test_set_overrides_before_validation() -> None:
    raw = {"dataset": {"name": "digits"}, "models": ["mlp", {"name": "lenet"}], "attacks": ["fgsm"]}
    out = overrides.apply(
        raw,
        ["dataset.n=200", "models.lenet.recipe.epochs=1", "models.mlp.label=m", "attacks.0.params.norm=l2"],
        source="s.yaml",
    )
    assert out["dataset"] == {"name": "digits", "n": 200}
    assert out["models"] == [{"name": "mlp", "label": "m"}, {"name": "lenet", "recipe": {"epochs": 1}}]
    assert out["attacks"] == [{"name": "fgsm", "params": {"norm": "l2"}}]
    assert raw["models"] == ["mlp", {"name": "lenet"}]  # the input is not changed
    with pytest.raises(SuiteError, match=r"s\.yaml: --set 'models\.vgg\.recipe\.epochs=1': models has no element"):
        overrides.apply(raw, ["models.vgg.recipe.epochs=1"], source="s.yaml")
    with pytest.raises(SuiteError, match="expected key=value"):
        overrides.apply(raw, ["dataset.n"], source="s.yaml")


def test_set_errors_name_the_field_like_the_file(tmp_path: Path) -> None:
    bad = runner.invoke(app, ["validate", str(QUICKSTART), "--set", "dataset.n=-3"])
    assert bad.exit_code == 2
    assert f"{QUICKSTART}: dataset.n:" in bad.output
    ok = runner.invoke(
        app, ["validate", str(QUICKSTART), "--set", "dataset.n=200", "--set", "models.lenet.recipe.epochs=1"]
    )
    assert ok.exit_code == 0, ok.output


def test_validate_finds_missing_data_files_and_weights(tmp_path: Path) -> None:
    suite = tmp_path / "s.yaml"
    tail = "attacks: [fgsm]\nepsilons: [0, 0.1]\n"
    suite.write_text(f"name: s\ndataset: {{name: mnist, options: {{root: {tmp_path}}}}}\nmodels: [mlp]\n{tail}")
    done = runner.invoke(app, ["validate", str(suite)])
    assert done.exit_code == 2
    assert f"{suite}: dataset: data set 'mnist':" in done.output and f"not found under {tmp_path}" in done.output
    weights = tmp_path / "nowhere.pt"
    suite.write_text(f"name: s\ndataset: {{name: digits}}\nmodels: [{{name: mlp, weights: {weights}}}]\n{tail}")
    done = runner.invoke(app, ["validate", str(suite)])
    assert done.exit_code == 2
    assert "models[0].weights" in done.output and str(weights) in done.output
