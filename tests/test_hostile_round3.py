"""Hostile input, round three (issue 31): every example of the issue, each on today's real code paths.

Modules a suite names are real files that leave a marker when imported, so "nothing is imported" is
observed; run directories are real runs, edited the way a user (or an attacker) would edit them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import bench
from bench.api import EvaluateError
from bench.data import load_dataset
from bench.rundir import RunDir
from tests.conftest import record_results, trained
from tests.test_hostile_suite import bench as cli
from tests.test_hostile_suite import write

CANARY = """
from pathlib import Path
Path(__file__).with_suffix(".imported").write_text("imported")
x = 1
"""


def one_error_line(output: str) -> None:
    assert output.count("error:") == 1, output


# -- 1. nothing from a suite is imported: ensemble members are registered names ------------------------------


@pytest.mark.parametrize("member", ["canary3:x", "this:x", "os:system"])
def test_a_reliable_member_is_never_imported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, member: str) -> None:
    (tmp_path / "canary3.py").write_text(CANARY)
    monkeypatch.syspath_prepend(str(tmp_path))
    path = write(tmp_path, attacks=[{"name": "reliable", "params": {"members": [member]}}])
    for argv in (
        ("validate", path),
        ("run", path, "--out", tmp_path / "run", "--no-mlflow"),
        (
            "validate",
            write(tmp_path, "plain.yaml", attacks=["reliable"]),
            "--set",
            f"attacks.reliable.params.members=[{member}]",
        ),
    ):
        code, out = cli(*argv)
        assert code == 2, out
        assert f"member '{member}' is not a registered attack" in out and "never imported" in out
        assert "Beautiful is better than ugly" not in out  # `import this` prints the Zen of Python
        one_error_line(out)
    assert not (tmp_path / "canary3.imported").exists()
    assert not (tmp_path / "run").exists()
    model = trained("mlp")
    data = load_dataset("digits", "test")
    with pytest.raises(EvaluateError, match="module 'canary3' is not trusted, so it is not imported"):
        bench.evaluate(model, data.x[:4], data.y[:4], "canary3:x")
    with pytest.raises(EvaluateError, match="is not a registered attack"):
        bench.evaluate(model, data.x[:4], data.y[:4], "reliable", members=["canary3:x"])
    assert not (tmp_path / "canary3.imported").exists()


def test_registered_members_and_art_still_work() -> None:
    from bench.attacks import make_attack

    made = make_attack("reliable", members=["apgd", "art:FastGradientMethod"], member_params={"apgd": {"steps": 5}})
    assert [label for label, _ in made.built_members()] == ["apgd", "art:FastGradientMethod"]


# -- 2. every amount of work has a cap, enforced identically ---------------------------------------------------


@pytest.mark.parametrize(
    ("attack", "params", "field", "cap"),
    [
        ("apgd", {"restarts": 1_000_000_000}, "restarts", "100"),
        ("pgd", {"steps": 10**12}, "steps", "10,000"),
        ("square", {"max_iter": 10**9}, "max_iter", "100,000"),
        ("uniform_noise", {"draws": 10**9}, "draws", "10,000"),
        ("apgd_t", {"n_target_classes": 10**6}, "n_target_classes", "1,000"),
        ("art:HopSkipJump", {"max_eval": 10**9}, "max_eval", "1,000,000"),
    ],
)
def test_work_caps_are_the_same_in_validate_run_set_and_evaluate(
    tmp_path: Path, attack: str, params: dict[str, int], field: str, cap: str
) -> None:
    value = next(iter(params.values()))
    expected = f"{field}: {value} is over the cap of {cap}"
    path = write(tmp_path, attacks=[{"name": attack, "params": params}])
    plain = write(tmp_path, "plain.yaml", attacks=[attack])
    messages = []
    for argv in (
        ("validate", path),
        ("run", path, "--out", tmp_path / "run", "--no-mlflow"),
        ("validate", plain, "--set", f"attacks.{attack}.params.{field}={value}"),
    ):
        code, out = cli(*argv)
        assert code == 2 and expected in out, out
        assert not (tmp_path / "run").exists()  # refused before any work: no run directory (it ran for minutes)
        messages.append(out.split("params: ", 1)[1])
    assert len(set(messages)) == 1, messages
    with pytest.raises(EvaluateError, match=expected.replace("(", r"\(")):
        bench.evaluate(trained("mlp"), *_digits(4), attack, **params)


def test_a_reliable_member_budget_is_capped_too(tmp_path: Path) -> None:
    path = write(tmp_path, attacks=[{"name": "reliable", "params": {"member_params": {"square": {"max_iter": 10**9}}}}])
    code, out = cli("validate", path)
    assert code == 2 and "member 'square'" in out and "max_iter: 1000000000 is over the cap of 100,000" in out


def test_epochs_are_capped(tmp_path: Path) -> None:
    path = write(tmp_path, models=[{"name": "mlp", "recipe": {"epochs": 10**9}}])
    code, out = cli("validate", path)
    assert code == 2 and "recipe field epochs: must be an integer from 1 to 1,000, got 1000000000" in out


class _Counting(nn.Module):
    """Counts the calls of the wrapped model."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.calls = model, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.model(x)


def test_evaluate_refuses_a_million_epsilons_at_once() -> None:
    model = _Counting(trained("mlp"))
    with pytest.raises(EvaluateError, match=r"epsilons: 1,000,000 values, over the cap of 1,000"):
        bench.evaluate(model, *_digits(4), "fgsm", epsilons=list(np.linspace(0, 0.3, 1_000_000)))
    assert model.calls == 0  # refused before the model ran once (it ran for minutes)


def test_perf_threads_are_capped() -> None:
    code, out = cli("perf", "--threads", "100000", "--no-mlflow")
    assert code == 2 and "--threads: 100000 is over the cap of" in out and "per core" in out


def test_a_report_of_a_million_result_rows_is_refused_fast(report_run: Path, tmp_path: Path) -> None:
    run = Path(shutil.copytree(report_run, tmp_path / "big"))
    results = RunDir(run).read_results()
    big = pd.concat([results] * (1_000_000 // len(results) + 1), ignore_index=True)
    big.to_csv(run / "results.csv", index=False)
    (run / "results.parquet").unlink()
    record_results(run)
    code, out = cli("report", run, "--out", tmp_path / "r")
    assert code == 2 and "result rows, over the cap of 100,000" in out, out
    assert not (tmp_path / "r").exists()  # refused before any table, figure or page (it ran for minutes)


# -- 3. recipe fields are closed sets and ranges ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("recipe", "message"),
    [
        ({"optimizer": "os.system"}, "recipe field optimizer: 'os.system' is not allowed (allowed: adam, sgd)"),
        ({"schedule": "warmup"}, "recipe field schedule: 'warmup' is not allowed (allowed: none, cosine)"),
        ({"lr": float("inf")}, "recipe field lr: must be a finite number > 0, got inf"),
        ({"lr": 0.0}, "recipe field lr: must be a finite number > 0, got 0.0"),
        ({"batch_size": 0}, "recipe field batch_size: must be an integer from 1 to 1,000,000, got 0"),
        ({"momentum": 1.5}, "recipe field momentum: must be a number from 0 to below 1, got 1.5"),
        ({"weight_decay": -1.0}, "recipe field weight_decay: must be a finite number >= 0, got -1.0"),
    ],
)
def test_recipe_fields_are_validated_where_the_suite_is(tmp_path: Path, recipe: dict, message: str) -> None:
    path = write(tmp_path, models=[{"name": "mlp", "recipe": recipe}])
    code, out = cli("validate", path)
    assert code == 2 and f"models[0].recipe: {message}" in out, out
    code, out = cli("run", path, "--out", tmp_path / "run", "--no-mlflow")
    assert code == 2 and message in out, out


# -- 4. validate refuses what run refuses before the first cell --------------------------------------------------


def test_validate_refuses_a_target_class_the_data_lacks(tmp_path: Path) -> None:
    path = write(
        tmp_path, attacks=[{"name": "pgd", "params": {"targeted": True, "target_mode": "given"}, "target_class": 50}]
    )
    expected = "attacks[0].target_class: class 50 does not exist: data set 'digits' has classes 0..9"
    code, out = cli("validate", path)
    assert code == 2 and expected in out, out
    code, out = cli("run", path, "--out", tmp_path / "run", "--no-mlflow")
    assert code == 2 and expected in out, out


def test_validate_loads_an_external_model_as_run_does(tmp_path: Path) -> None:
    torch.save({"weight": torch.zeros(10, 32)}, tmp_path / "w.pt")
    path = write(tmp_path, models=[{"name": "lin", "factory": "nets:lin", "weights": "w.pt"}])
    (tmp_path / "nets.py").write_text(
        "from torch import nn\n\ndef lin(input_shape, num_classes):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))\n"
    )
    code, out = cli("validate", path)
    assert code == 2 and "models[0]:" in out and "does not match the architecture" in out, out


# -- 5. run directories are checked before they are believed ---------------------------------------------------


def _edit_results(run: Path, column: str, value: float, *, at: int = 0) -> None:
    for name in ("results.csv", "results.parquet"):
        path = run / name
        table = pd.read_csv(path) if name.endswith(".csv") else pd.read_parquet(path)
        table.loc[at, column] = value
        if name.endswith(".csv"):
            table.to_csv(path, index=False)
        else:
            table.to_parquet(path, index=False)


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [("robust_accuracy", 7.5, "robust_accuracy 7.5 is not possible"), ("eps", float("inf"), "eps inf is not possible")],
)
def test_impossible_values_are_refused_even_when_trusted(
    report_run: Path, tmp_path: Path, column: str, value: float, message: str
) -> None:
    run = Path(shutil.copytree(report_run, tmp_path / "run"))
    _edit_results(run, column, value)
    for command in (("report", run, "--out", tmp_path / "r"), ("check", run, "--floor", "*/fgsm:auc>=0")):
        code, out = cli(*command)
        assert code == 2 and "its sha256" in out and "changed after the run" in out, out
        code, out = cli(*command, "--trust-edited")
        assert code == 2 and message in out, out


def test_a_changed_value_is_refused_then_shown_as_edited(report_run: Path, tmp_path: Path) -> None:
    run = Path(shutil.copytree(report_run, tmp_path / "run"))
    results = RunDir(run).read_results()
    row = int(results.index[(results["eps"] == 0.1) & (results["attack"] == "fgsm")][0])
    _edit_results(run, "robust_accuracy", float(results.loc[row, "ci_high"]), at=row)  # plausible, but not the run's
    code, out = cli("report", run, "--out", tmp_path / "r")
    assert code == 2 and "results.csv: its sha256" in out and "--trust-edited" in out, out
    code, out = cli("sync", run)
    assert code != 0
    code, out = cli("report", run, "--out", tmp_path / "r", "--trust-edited")
    assert code == 0 and "warning: EDITED RUN" in out, out
    first = (tmp_path / "r" / "report.md").read_text().splitlines()[0]
    assert first.startswith("> **EDITED RUN") and "results.csv" in first
    assert 'id="edited"' in (tmp_path / "r" / "report.html").read_text()
    code, out = cli("check", run, "--floor", "*/fgsm:auc>=0", "--trust-edited", "--markdown", tmp_path / "c.md")
    assert code == 0 and (tmp_path / "c.md").read_text().startswith("> **EDITED RUN"), out
    code, out = cli("baseline", run, "-o", tmp_path / "b.json")
    assert code == 2 and "changed after the run" in out


def test_resume_refuses_edited_cells_unless_trusted(tmp_path: Path) -> None:
    path = write(tmp_path, dataset={"name": "digits", "n": 40}, epsilons=[0, 0.1, 0.2])
    code, out = cli("run", path, "--out", tmp_path / "run", "--no-mlflow", "--quiet")
    assert code == 0, out
    copy = Path(shutil.copytree(tmp_path / "run", tmp_path / "copy"))
    rows_file = copy / "cells" / "mlp__fgsm" / "rows.parquet"
    rows = pd.read_parquet(rows_file)
    at = rows["eps"] == 0.2
    rows.loc[at, "robust_accuracy"] = rows.loc[at, "ci_high"]  # in range, but not what the run computed
    rows.to_parquet(rows_file)
    code, out = cli("run", path, "--resume", copy, "--no-mlflow", "--quiet")
    assert code == 2 and "rows.parquet: its sha256" in out and "recorded in done.json" in out, out
    code, out = cli("run", path, "--resume", copy, "--no-mlflow", "--quiet", "--trust-edited")
    assert code == 0 and "warning: EDITED RUN" in out, out
    manifest = RunDir(copy).read_manifest()
    assert manifest["edited"] and "rows.parquet" in manifest["edited"][0]
    assert (copy / "report" / "report.md").read_text().startswith("> **EDITED RUN")
    code, out = cli("check", copy, "--floor", "*/fgsm:auc>=0")  # fresh digests, but resumed from an edited cell
    assert code == 2 and "resumed from edited cells" in out, out
    code, out = cli("check", copy, "--floor", "*/fgsm:auc>=0", "--trust-edited")
    assert code == 0 and "warning: EDITED RUN" in out, out
    code, out = cli("run", path, "--out", tmp_path / "new", "--trust-edited")
    assert code == 2 and "--trust-edited: only with --resume" in out


# -- 6. bench.evaluate: EvaluateError naming the argument, never an engine traceback --------------------------


def _digits(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    data = load_dataset("digits", "test")
    return data.x[:n], data.y[:n]


class _FewerRows(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(max(len(x) - 1, 1), 10)


class _IntegerLogits(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(x), 10, dtype=torch.long)


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ("labels50", {}, r"y: labels from \d+ to 50, but the model returns 10 logits \(allowed: 0 to 9\)"),
        ("fewer", {}, "model: returned 3 rows of logits for 4 inputs"),
        ("ok", {"batch_size": "5"}, "batch_size: must be an integer from 1 to 1,000,000, got '5'"),
        ("intlogits", {}, "model: must return floating-point logits, got torch.int64"),
        ("strlabels", {}, "y: must be"),
        ("zerodim", {}, r"x: every dimension must be at least 1, got shape \(4, 1, 0, 8\)"),
        ("ok", {"seed": 1.5}, "seed: must be a 64-bit integer"),
        ("ok", {"bounds": (1, 0)}, "bounds: must be"),
        ("ok", {"epsilons": "0.1"}, "epsilons: must be a list of numbers"),
        ("ok", {"track": "yes"}, "track: must be True or False"),
        ("notmodel", {}, "model: must be a torch.nn.Module"),
        ("nan", {}, "x: holds NaN or infinite values"),
    ],
)
def test_evaluate_bad_arguments_are_evaluate_errors(args: str, kwargs: dict, message: str) -> None:
    x, y = _digits(4)
    model: object = trained("mlp")
    if args == "labels50":
        y = y.clone()
        y[0] = 50
    elif args == "fewer":
        model = _FewerRows()
    elif args == "intlogits":
        model = _IntegerLogits()
    elif args == "strlabels":
        y = np.array(["a", "b", "c", "d"])  # type: ignore[assignment]
    elif args == "zerodim":
        x = torch.zeros(4, 1, 0, 8)
    elif args == "notmodel":
        model = "mlp"
    elif args == "nan":
        x = x.clone()
        x[0, 0, 0, 0] = float("nan")
    with pytest.raises(EvaluateError, match=message):
        bench.evaluate(model, x, y, "fgsm", **{"epsilons": [0, 0.1], **kwargs})


def test_a_data_set_or_model_name_is_never_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, report_run: Path
) -> None:
    """Only attacks take trusted plugins; a data set named in a run directory's manifest never runs code."""
    from bench.data import DATASETS
    from bench.registry import RegistryError
    from model_zoo import MODELS

    (tmp_path / "canary4.py").write_text(CANARY)
    monkeypatch.syspath_prepend(str(tmp_path))
    for registry in (DATASETS, MODELS):
        with pytest.raises(RegistryError, match="unknown"):
            registry.get("canary4:x")
    run = Path(shutil.copytree(report_run, tmp_path / "run"))
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["data"]["name"] = "canary4:x"
    (run / "manifest.json").write_text(json.dumps(manifest))
    cli("sync", run)
    cli("report", run, "--out", tmp_path / "r")
    assert not (tmp_path / "canary4.imported").exists()


def test_evaluate_takes_trusted_plugins_and_names_what_only_the_model_reveals() -> None:
    x, y = _digits(6)
    table = bench.evaluate(trained("mlp"), x, y, "bench.attacks.fgsm:FGSM", epsilons=[0, 0.1], bounds=np.array([0, 1]))
    assert len(table) == 2  # a trusted module:Class plugin, as in a suite; bounds as an array
    with pytest.raises(EvaluateError, match=r"minimal_eps: not available for attack 'gaussian_noise' \(allowed: fgsm"):
        bench.evaluate(trained("mlp"), x, y, "gaussian_noise", epsilons=[0, 0.1], minimal_eps=True)
    three = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    with pytest.raises(EvaluateError, match=r"attack 'apgd_t' on this model and data: .*needs at least 4 classes"):
        bench.evaluate(three, x, y % 3, "apgd_t", epsilons=[0, 0.1], steps=2)
    assert (
        len(bench.evaluate(trained("mlp"), (x * 255).to(torch.int8).abs(), y, "fgsm", epsilons=[0, 1], bounds=(0, 255)))
        == 2
    )
