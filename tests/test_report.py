"""Reports rendered from real run directories: numbers, flags, comparison with McNemar, CLI and MLflow sources."""

from __future__ import annotations

import io
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats as scipy_stats
from typer.testing import CliRunner

from bench import stats
from bench.cli import app
from bench.rundir import RESULT_COLUMNS, RunDir
from bench.stats import mcnemar
from reports.compare import compare_runs, differences, model_summary
from reports.flags import sanity_flags
from reports.render import render_report
from reports.sources import ReportError, load_run
from reports.tables import median_minimal_eps
from tests.conftest import record_results

NUMBER = r"(-?\d+\.\d+)"


def _md_summary(markdown: str) -> list[dict[str, str]]:
    """The rows of the summary tables of a report.md, as header -> cell text."""
    rows: list[dict[str, str]] = []
    header: list[str] | None = None
    for line in markdown.splitlines():
        if line.startswith("| model | attack | clean |"):
            header = [c.strip() for c in line.strip("|").split("|")]
        elif header and line.startswith("|---"):
            continue
        elif header and line.startswith("| "):
            rows.append(dict(zip(header, (c.strip() for c in line.strip("|").split(" | ")), strict=True)))
        else:
            header = None
    return rows


def test_bench_run_writes_the_report(report_run: Path, report_dir: Path) -> None:
    html = (report_dir / "report.html").read_text()
    markdown = (report_dir / "report.md").read_text()
    figures = sorted((report_dir / "figures").glob("*.png"))
    # 2 curves, 1 heatmap, 4 cells x 2 example figures
    assert len(figures) == 11
    for fig in figures:
        assert f"](figures/{fig.name})" in markdown
    assert html.count('src="data:image/png;base64,') == len(figures)
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", html), "the HTML must not reference the network"
    assert "<script" not in html


def test_run_draws_each_attack_curve_once_for_its_figures_and_its_report(
    report_run: Path, report_dir: Path, tmp_path: Path
) -> None:
    """``figures/curve_<attack>.png`` and the report's curve are one PNG, drawn once, used in both places."""
    from PIL import Image

    curves = sorted((report_run / "figures").glob("curve_*.png"))
    assert [c.name for c in curves] == ["curve_fgsm.png", "curve_fgsm_t.png"]
    for curve in curves:
        attack = curve.stem.removeprefix("curve_")
        assert (report_dir / "figures" / f"r1-curve-{attack}.png").read_bytes() == curve.read_bytes()
        assert Image.open(curve).size[0] > 500
    # the report takes the curves it is handed as they are, and draws only the ones it is not handed
    from reports.montage import png_bytes
    from reports.render import render_report
    from reports.sources import load_run

    handed = png_bytes(Image.new("RGB", (3, 2), (1, 2, 3)))
    paths = render_report([load_run(report_run)], tmp_path / "handed", drawn_curves={"fgsm": handed})
    assert (paths.figures / "r1-curve-fgsm.png").read_bytes() == handed
    assert (paths.figures / "r1-curve-fgsm_t.png").read_bytes() == (
        report_run / "figures" / "curve_fgsm_t.png"
    ).read_bytes()


def test_markdown_numbers_equal_results_csv(report_run: Path, report_dir: Path) -> None:
    results = pd.read_csv(report_run / "results.csv")
    rows = _md_summary((report_dir / "report.md").read_text())
    cells = [r for r in rows if "worst case" not in r["attack"]]
    assert len(cells) == results.groupby(["model", "attack"]).ngroups == 4
    checked = 0
    for row in cells:
        attack = row["attack"].replace(" (targeted)", "")
        mine = results[(results["model"] == row["model"]) & (results["attack"] == attack)].sort_values("eps")
        assert row["clean"] == f"{mine['clean_accuracy'].iloc[0]:.3f}"
        for r in mine.itertuples():
            value, low, high = re.fullmatch(rf"{NUMBER} \[{NUMBER}, {NUMBER}\]", row[f"eps {r.eps:g}"]).groups()
            assert (value, low, high) == (f"{r.robust_accuracy:.3f}", f"{r.ci_low:.3f}", f"{r.ci_high:.3f}")
            checked += 1
        assert row["AUC (grid)"] == f"{stats.curve_auc(mine['eps'], mine['robust_accuracy']):.3f}"
        reference = stats.reference_auc(mine["eps"], mine["robust_accuracy"], "linf")
        assert row["AUC"] == f"{reference.value:.3f}" and not reference.partial  # the grid spans [0, 0.3]
    assert checked == len(results)


def test_worst_case_and_median_minimal_eps_agree_with_per_sample_flags(report_run: Path, report_dir: Path) -> None:
    samples = pd.read_parquet(report_run / "samples.parquet")
    rows = _md_summary((report_dir / "report.md").read_text())
    for model in ("mlp", "lenet"):
        worst = next(r for r in rows if r["model"] == model and "worst case" in r["attack"])
        mine = samples[samples["model"] == model]
        for eps, part in mine.groupby("eps"):
            robust = part.groupby("index")["correct"].all()
            assert worst[f"eps {eps:g}"].startswith(f"{robust.mean():.3f} ")
            # at least as low as every single attack
            assert robust.mean() <= part.groupby("attack")["correct"].mean().min() + 1e-12
        for _, cell in mine.groupby("attack"):
            flags = cell.pivot(index="eps", columns="index", values="correct").sort_index()
            minimal = stats.first_fooled_eps(flags.to_numpy(), flags.index.to_numpy())
            upper_median = np.sort(minimal)[len(minimal) // 2]
            curve = cell.groupby("eps")["correct"].mean()
            assert median_minimal_eps(curve.index.to_numpy(), curve.to_numpy()) == upper_median


def _planted_copy(report_run: Path, tmp_path: Path) -> Path:
    """A copy of the run without its report and cells (no example grids: renders in a few seconds)."""
    copy = tmp_path / "planted"
    shutil.copytree(report_run, copy, ignore=shutil.ignore_patterns("report", "cells"))
    return copy


def _write_results(run: Path, results: pd.DataFrame) -> None:
    """Plant ``results`` as if the run had produced them: the manifest records their digests, as a run does."""
    results.to_csv(run / "results.csv", index=False)
    results.to_parquet(run / "results.parquet", index=False)
    record_results(run)


def test_clean_run_raises_no_flag(report_run: Path) -> None:
    run = load_run(report_run)
    assert sanity_flags(run.results, models=run.models) == []


def test_planted_non_monotone_curve_raises_the_flag(report_run: Path, tmp_path: Path) -> None:
    planted = _planted_copy(report_run, tmp_path)
    results = RunDir(planted).read_results()
    cell = (results["model"] == "lenet") & (results["attack"] == "fgsm")
    at = cell & (results["eps"] == 0.2)
    before = float(results.loc[cell & (results["eps"] == 0.1), "robust_accuracy_pointwise"].iloc[0])
    results.loc[at, "robust_accuracy_pointwise"] = before + 0.25
    _write_results(planted, results)

    paths = render_report([load_run(planted)], tmp_path / "out")
    markdown = paths.markdown.read_text()
    flag_lines = [line for line in markdown.splitlines() if "`curve-rises`" in line]
    assert len(flag_lines) == 1
    assert "lenet / fgsm" in flag_lines[0]
    assert "rises by 0.250 from eps 0.1 to 0.2" in flag_lines[0]
    assert "accuracy should not rise with eps" in flag_lines[0]  # the one-line explanation
    assert "curve-rises" in paths.html.read_text()


def test_flags_for_eps0_budget_family_and_model_problems(report_run: Path) -> None:
    run = load_run(report_run)
    results = run.results.copy()
    fgsm = results[(results["model"] == "mlp") & (results["attack"] == "fgsm")]
    pgd = fgsm.assign(attack="pgd", attack_name="pgd", robust_accuracy=fgsm["robust_accuracy"] + 0.1)
    noise = fgsm.assign(
        attack="uniform_noise", attack_name="uniform_noise", robust_accuracy=fgsm["robust_accuracy"] - 0.1
    )
    broken = results.copy()
    first = broken.index[(broken["eps"] == 0) & (broken["model"] == "lenet")][0]
    broken.loc[first, "robust_accuracy_pointwise"] -= 2 / broken.loc[first, "n"]
    over = broken.index[(broken["eps"] == 0.1) & (broken["model"] == "lenet")][0]
    broken.loc[over, "max_linf"] = 0.13
    models = {
        "mlp": {**run.models["mlp"], "output_warnings": ["model 'mlp' outputs look like probabilities"]},
        "lenet": {**run.models["lenet"], "zero_gradient_fraction": 0.4},
    }
    families = {"fgsm": "one_step", "fgsm_t": "one_step", "pgd": "iterative", "uniform_noise": "noise"}
    attacks = {attack: {"family": family} for attack, family in families.items()}
    flags = sanity_flags(pd.concat([broken, pgd, noise], ignore_index=True), models=models, attacks=attacks)
    codes = {f.code for f in flags}
    assert codes == {
        "eps0-accuracy",
        "budget-exceeded",
        "iterative-weaker-than-fgsm",
        "gradient-weaker-than-noise",
        "probability-outputs",
        "zero-gradients",
    }
    (family,) = [f for f in flags if f.code == "iterative-weaker-than-fgsm"]  # one flag for the pair, every eps in it
    assert family.subject == "mlp / pgd vs fgsm @ linf eps " + ", ".join(f"{e:g}" for e in sorted(fgsm["eps"]) if e > 0)
    assert "leaves more samples robust than fgsm at 4 eps" in family.message and "(+0.100)" in family.message
    assert {f.subject.split(" vs ")[1].split(" @")[0] for f in flags if f.code == "gradient-weaker-than-noise"} == {
        "uniform_noise"
    }
    # the targeted attack is never compared with untargeted noise
    assert not any("fgsm_t" in f.subject for f in flags if f.code == "gradient-weaker-than-noise")


class _Saturated(torch.nn.Module):
    """Logits scaled up so that float32 softmax saturates: the classic masked-gradient model."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) * 1e4


def test_zero_gradient_fraction_detects_saturated_softmax(lenet_digits: torch.nn.Module, digits_test) -> None:
    from bench.engine import zero_gradient_fraction

    data = digits_test.subset(200)
    plain = zero_gradient_fraction(lenet_digits, data, torch.device("cpu"), 100)
    masked = zero_gradient_fraction(_Saturated(lenet_digits), data, torch.device("cpu"), 100)
    assert plain < 0.05
    assert masked > 0.5
    no_rows = pd.DataFrame(columns=RESULT_COLUMNS)
    flags = sanity_flags(no_rows, models={"m": {"zero_gradient_fraction": masked}})
    assert [f.code for f in flags] == ["zero-gradients"]


def test_mcnemar_exact_test() -> None:
    base = np.array([True] * 10 + [False] * 5 + [True] * 20)
    cand = np.array([False] * 10 + [True] * 5 + [True] * 20)
    result = mcnemar(base, cand)
    assert (result.b, result.c) == (10, 5)
    assert result.p_value == pytest.approx(scipy_stats.binomtest(5, 15, 0.5).pvalue)
    lopsided = mcnemar(np.ones(12, bool), np.zeros(12, bool))
    assert lopsided.p_value == pytest.approx(2 * 0.5**12)  # all 12 discordant pairs one way
    assert mcnemar(base, base).p_value == 1.0
    with pytest.raises(ValueError, match="same shape"):
        mcnemar(base, cand[:-1])


@pytest.fixture(scope="module")
def candidate_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same suite and data as ``report_run`` with shorter training (weaker models)."""
    from bench.engine import run_suite
    from bench.suite import validate

    suite = validate(
        {
            "name": "report-test",
            "dataset": {"name": "digits", "n": 120},
            "models": [{"name": "mlp", "recipe": {"epochs": 1}}, {"name": "lenet", "recipe": {"epochs": 2}}],
            "attacks": ["fgsm", {"name": "fgsm", "label": "fgsm_t", "params": {"targeted": True}}],
            "epsilons": [0, 0.05, 0.1, 0.2, 0.3],
            "tracking": {"enabled": False, "examples": 0},
        }
    )
    out = tmp_path_factory.mktemp("candidate") / "run"
    run_suite(suite, out=out, track=False, echo=None)
    return out


def test_comparison_pairs_samples_and_tests_each_cell(report_run: Path, candidate_run: Path, tmp_path: Path) -> None:
    base, cand = load_run(report_run), load_run(candidate_run)
    table = compare_runs(base, cand)
    assert len(table) == len(base.results) == 20
    assert table["paired"].all()
    for row in table.itertuples():
        b = base.samples.query("model == @row.model and attack == @row.attack and eps == @row.eps")
        c = cand.samples.query("model == @row.model and attack == @row.attack and eps == @row.eps")
        pair = b.merge(c, on="index", suffixes=("_b", "_c"))
        assert row.b == int((pair["correct_b"] & ~pair["correct_c"]).sum())
        assert row.c == int((~pair["correct_b"] & pair["correct_c"]).sum())
        assert row.delta == pytest.approx(c["correct"].mean() - b["correct"].mean())
    assert table["q_value"].ge(table["p_value"] - 1e-12).all()  # BH never lowers a p-value
    assert table["significant"].equals(table["q_value"] < 0.05)

    without_examples = load_run(_planted_copy(report_run, tmp_path))  # same samples, renders faster
    paths = render_report([without_examples, cand], tmp_path / "cmp")
    markdown = paths.markdown.read_text()
    assert "## Comparison of runs" in markdown
    assert f"{int(table['significant'].sum())} significant difference(s)" in markdown
    html = paths.html.read_text()
    assert 'data-section="comparison"' in html
    self_compare = compare_runs(base, base)
    assert (self_compare["delta"] == 0).all() and not self_compare["significant"].any()
    # the banner names what differs: the candidate's models were trained with other recipes
    banner = differences(base, cand)
    assert [line.split(":")[0] for line in banner] == [
        "suite file (digest)",
        "model lenet",
        "model lenet",
        "model mlp",
        "model mlp",
    ]
    # other recipes, other weights: the banner says the difference includes training variance
    assert sum("weights differ" in line and "training variance" in line for line in banner) == 2
    assert "The runs differ in set-up" in markdown and 'data-banner="differences"' in html
    assert differences(base, base) == [] and "differ in set-up" not in _comparison_md(base, tmp_path)
    # the per-model summary: worst case over both attacks at linf 0.1, McNemar on its per-sample flags
    summary = {r["model"]: r for r in model_summary(base, cand)}
    assert sorted(summary) == ["lenet", "mlp"]
    for model, row in summary.items():
        flags = [
            run.samples[(run.samples["model"] == model) & (run.samples["eps"] == 0.1)].groupby("index")["correct"].all()
            for run in (base, cand)
        ]
        assert (row["eps"], row["attacks"], row["norm"]) == (0.1, 2, "linf")
        assert row["baseline"] == flags[0].mean() and row["candidate"] == flags[1].mean()
        test = mcnemar(flags[0].sort_index().to_numpy(), flags[1].sort_index().to_numpy())
        assert (row["baseline_only"], row["candidate_only"], row["p_value"]) == (test.b, test.c, test.p_value)
        assert row["significant"] == (row["p_holm"] < 0.05) and row["p_holm"] >= row["p_value"]
        assert (
            f"| {model} | linf | 0.1 | {row['baseline']:.3f} → {row['candidate']:.3f} | {row['delta']:+.3f} |"
            in markdown
        )
        # the AUC delta is tested too: Wilcoxon on per-sample AUCs whose mean is the row's AUC
        per_sample = []
        for run in (base, cand):
            mine = run.samples[run.samples["model"] == model]
            curves = mine.groupby(["index", "eps"])["correct"].all().unstack("eps").sort_index(axis=1)
            eps = curves.columns.to_numpy(dtype=float)
            cumulative = np.logical_and.accumulate(curves.to_numpy(), axis=1).astype(float)
            per_sample.append(np.array([stats.reference_auc(eps, c, "linf").value for c in cumulative]))
        assert per_sample[0].mean() == pytest.approx(row["auc_baseline"], abs=1e-9)
        assert per_sample[1].mean() == pytest.approx(row["auc_candidate"], abs=1e-9)
        diff = np.round(per_sample[1] - per_sample[0], 12)  # equal differences tie (not by the last bit)
        expected = scipy_stats.wilcoxon(diff, zero_method="wilcox").pvalue if np.any(diff != 0) else 1.0
        assert row["auc_p_value"] == pytest.approx(expected)
        assert row["auc_significant"] == (row["auc_p_holm"] < 0.05) and row["auc_p_holm"] >= row["auc_p_value"]
    assert all(r["auc_p_value"] == 1.0 and not r["auc_significant"] for r in model_summary(base, base))
    assert "AUC significant" in markdown and '<th class="text">AUC significant</th>' in html
    assert "| b | c |" not in markdown and "<th>b (" not in html and "<th>robust in baseline only</th>" in html


def test_comparison_without_shared_samples_reports_deltas_only(report_run: Path, tmp_path: Path) -> None:
    other = _planted_copy(report_run, tmp_path)
    manifest = RunDir(other).read_manifest()
    manifest["data"]["digest"] = "another-data-set"
    (other / "manifest.json").write_text(json.dumps(manifest))
    table = compare_runs(load_run(report_run), load_run(other))
    assert not table["paired"].any()
    assert table["p_value"].isna().all() and not table["significant"].any()
    assert (table["delta"] == 0).all()


def test_cli_report_from_run_directories(report_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    run = _planted_copy(report_run, tmp_path)
    result = CliRunner().invoke(app, ["report", str(run), "--out", str(out), "--eps", "0.2"])
    assert result.exit_code == 0, result.output
    assert (out / "report.html").exists() and (out / "report.md").exists()
    assert "robust accuracy, model x attack, linf eps = 0.2" in (out / "report.md").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give exactly one source"),
        (["{run}", "--runs", "abc"], "got RUN_DIR, --runs"),
        (["{missing}"], "run directory not found"),
        (["{run}", "--eps", "0.15"], "allowed: 0, 0.05, 0.1, 0.2, 0.3"),
        (["{run}", "--eps", "-1"], "--eps"),
    ],
)
def test_cli_report_bad_input(report_run: Path, tmp_path: Path, args: list[str], message: str) -> None:
    argv = [a.format(run=report_run, missing=tmp_path / "nope") for a in args]
    result = CliRunner().invoke(app, ["report", *argv, "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())


def test_load_run_names_the_missing_column(report_run: Path, tmp_path: Path) -> None:
    broken = _planted_copy(report_run, tmp_path)
    results = RunDir(broken).read_results().drop(columns=["ci_low"])
    _write_results(broken, results)
    with pytest.raises(ReportError, match=r"results.parquet: missing result column\(s\) ci_low"):
        load_run(broken)


@pytest.mark.mlflow_server
def test_report_from_mlflow_runs(report_run: Path, mlflow_uri: str, tmp_path: Path) -> None:
    from bench.tracking import sync_run_dir

    run_id = sync_run_dir(report_run)
    out = tmp_path / "from-mlflow"
    result = CliRunner().invoke(app, ["report", "--runs", run_id, "--out", str(out)])
    assert result.exit_code == 0, result.output
    local = (report_run / "report" / "report.md").read_text()
    remote = (out / "report.md").read_text()
    assert _md_summary(remote) == _md_summary(local)
    assert (out / "report.html").read_text().count("data:image/png;base64,") == 11
    by_experiment = CliRunner().invoke(app, ["report", "--experiment", "report-test", "--out", str(tmp_path / "e")])
    assert by_experiment.exit_code == 0, by_experiment.output
    missing = CliRunner().invoke(app, ["report", "--experiment", "no-such-exp", "--out", str(tmp_path / "x")])
    assert missing.exit_code == 2
    assert "no MLflow experiment named 'no-such-exp'" in missing.output


def test_median_minimal_eps_never_reached() -> None:
    assert math.isinf(median_minimal_eps(np.array([0.0, 0.1]), np.array([0.9, 0.6])))
    assert median_minimal_eps(np.array([0.1, 0.0, 0.2]), np.array([0.5, 0.9, 0.2])) == 0.1


def _comparison_md(run, tmp_path: Path) -> str:  # type: ignore[no-untyped-def]
    copy = load_run(_planted_copy(run.root, tmp_path / "self"), label="again")
    return render_report([copy, load_run(copy.root, label="same")], tmp_path / "self-cmp").markdown.read_text()


def test_unbounded_attacks_get_a_table_not_a_curve_and_crosscheck_puts_the_verdict_first() -> None:
    from bench.crosscheck import CROSSCHECK_COLUMNS
    from reports.views import CROSSCHECK_VIEW, compact_call, crosscheck_view, unbounded_rows

    base = dict.fromkeys(RESULT_COLUMNS, 0.0) | {"model": "mlp", "n": 10, "targeted": True, "clean_accuracy": 0.9}
    results = pd.DataFrame(
        [
            base | {"attack": "fooling_images", "norm": "none", "attack_success_rate": 0.7, "max_l2": 4.5},
            base | {"attack": "fgsm", "norm": "linf", "attack_success_rate": 0.2},
        ]
    )
    (row,) = unbounded_rows(results)
    assert (row["attack"], row["success_rate"], row["max_l2"], row["n"]) == ("fooling_images", 0.7, 4.5, 10)
    long = "PGD(eps_step=0.01, steps=40, norm=<Norm.LINF: 'linf'>, random_start=True, rel_step=0.1, restarts=1)"
    assert compact_call(long) == "PGD(eps_step=0.01, steps=40, norm=linf, …)"
    assert compact_call("art.attacks.evasion.FastGradientMethod(eps=0.1)") == "FastGradientMethod(eps=0.1)"
    table = pd.DataFrame(
        [
            dict.fromkeys(CROSSCHECK_COLUMNS, 0.0) | {"pair": p, "passed": ok, "native": long, "art": "ART()"}
            for p, ok in (("fgsm", True), ("pgd", False))
        ]
    )
    rows = crosscheck_view(table)
    assert CROSSCHECK_VIEW[0] == "verdict" and [r["pair"] for r in rows] == ["pgd", "fgsm"]  # failures first
    assert rows[0]["native"] == compact_call(long) and rows[0]["native_full"] == long


def _cielab(rgb: tuple[float, float, float]) -> np.ndarray:
    """sRGB in [0, 1] -> CIELAB (D65), for colour-distance checks."""
    c = np.asarray(rgb, dtype=float)
    c = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ c
    f = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(f > 0.008856, np.cbrt(f), 7.787 * f + 16 / 116)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def test_curves_give_each_model_a_distinct_colour_and_each_run_a_line_style() -> None:
    from itertools import combinations

    from matplotlib.colors import to_rgb

    from reports.figures import curve_figure

    rows = pd.DataFrame(
        [
            {"model": m, "run": r, "eps": e, "robust_accuracy": 1 - e - 0.01 * i, "norm": "linf"}
            for i, m in enumerate(["mlp", "lenet", "cnn", "convnet", "mlp3"])
            for r in ("base", "cand")
            for e in (0.0, 0.1, 0.2)
        ]
    )
    fig = curve_figure(rows, style="run")
    lines = fig.axes[0].get_lines()
    colour = {line.get_label(): to_rgb(line.get_color()) for line in lines}
    per_model = {label.split(" · ")[0]: c for label, c in colour.items()}
    assert len(per_model) == 5
    for a, b in combinations(per_model.values(), 2):  # far apart in a perceptual space, not two greens
        assert np.linalg.norm(_cielab(a) - _cielab(b)) >= 30
    for model in per_model:  # the two runs of a model: same colour, different line style
        base, cand = (line for line in lines if line.get_label().startswith(f"{model} · "))
        assert to_rgb(base.get_color()) == to_rgb(cand.get_color()) and base.get_linestyle() != cand.get_linestyle()
    assert fig.axes[0].get_xlabel().startswith("Linf radius")


def _full_draw(rows: pd.DataFrame, title: str) -> bytes:
    """A per-cell curve drawn whole on a new figure, as curve_figure draws it less the legend."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    from reports.figures import CURVE_SIZE, figure_png, plot_curves

    sns.set_theme(style="whitegrid", context="notebook")
    fig, ax = plt.subplots(figsize=CURVE_SIZE)
    plot_curves(ax, rows, hue="model")
    ax.set_title(title)
    fig.tight_layout()
    return figure_png(fig)


def test_curve_painter_reusing_one_figure_draws_what_a_fresh_one_draws() -> None:
    """MLflow's per-cell curves share one figure: each PNG must not keep anything of the cells before it."""
    from PIL import Image

    from reports.figures import CurvePainter, curve_figure, figure_png

    def cell(model: str, norm: str, grid: list[float], drop: float) -> pd.DataFrame:
        acc = [max(0.0, 0.95 - drop * i) for i in range(len(grid))]
        return pd.DataFrame(
            {"model": model, "norm": norm, "eps": grid, "robust_accuracy": acc}
            | {"ci_low": [a - 0.03 for a in acc], "ci_high": [a + 0.03 for a in acc]}
        )

    cells = [
        cell("mlp", "linf", [0.0, 0.1, 0.2, 0.3], 0.3),
        cell("lenet", "patch", [0.0, 4.0, 8.0, 12.0], 0.1),
        cell("cnn", "l2", [0.0, 0.5, 1.0, 2.0, 3.0], 0.2),
    ]
    with CurvePainter() as shared:
        reused = [shared.png(c, title=f"{c['model'][0]} · x") for c in cells]
    for c, png in zip(cells, reused, strict=True):
        with CurvePainter() as fresh:
            assert fresh.png(c, title=f"{c['model'][0]} · x") == png
    assert len(set(reused)) == 3 and Image.open(io.BytesIO(reused[0])).size == (740, 420)
    # with the legend (the run's figures/curve_<attack>.png): the PNG of curve_figure itself
    both = pd.concat([cells[0], cell("lenet", "linf", [0.0, 0.1, 0.2, 0.3], 0.2)])
    with CurvePainter() as shared:
        shared.png(cells[1], title="before")
        drawn = shared.png(both, title="pgd (linf)", legend=True)
    assert drawn == figure_png(curve_figure(both, title="pgd (linf)"))
    # the margins and the background of one layout are reused: cells on one grid with other titles
    # and values, a title wider than the axes in between, then the first layout again
    wide = "a title far wider than the axes of this figure, so that the layout must measure it anew " * 2
    sequence = [
        (cell("mlp", "linf", [0.0, 0.1, 0.2, 0.3], 0.3), "mlp · fgsm"),
        (cell("mlp", "linf", [0.0, 0.1, 0.2, 0.3], 0.1), "lenet · pgd_targeted"),
        (cell("mlp", "linf", [0.0, 0.1, 0.2, 0.3], 0.2), wide),
        (cell("mlp", "linf", [0.0, 0.1, 0.2, 0.3], 0.05), "x"),
        (cell("mlp", "linf", [0.0, 0.1, 0.2, 0.3], 0.15), "a title\non two lines"),
        (cell("a_model_with_a_long_name", "linf", [0.0, 0.1, 0.2, 0.3], 0.1), "mlp · fgsm"),
        (cell("cnn", "l2", [0.0, 0.5, 1.0, 2.0, 3.0], 0.2), "cnn · pgd_l2"),
        (cell("mlp", "linf", [0.0, 0.1, 0.2, 0.3], 0.25), "mlp · bim"),
    ]
    with CurvePainter() as shared:
        for rows, title in sequence:
            with CurvePainter() as fresh:
                alone = shared.png(rows, title=title)
                assert alone == fresh.png(rows, title=title), title
            assert alone == _full_draw(rows, title), title  # MLflow's per-cell curve: no legend
            pair = pd.concat([rows, cell("lenet", str(rows["norm"].iloc[0]), list(rows["eps"]), 0.15)])
            assert shared.png(pair, title=title, legend=True) == figure_png(curve_figure(pair, title=title)), title


def test_every_flag_explains_itself_and_names_a_remedy() -> None:
    from reports.flags import EXPLANATIONS

    for code, text in EXPLANATIONS.items():
        why, _, remedy = text.partition(" Remedy: ")
        assert why and remedy, f"{code}: one sentence of why, then 'Remedy: ...'"


def test_heatmap_annotates_each_cell_in_the_colour_that_reads_on_it() -> None:
    from matplotlib.colors import to_rgb

    from reports.figures import figure_png, heatmap_figure

    table = pd.DataFrame({"fgsm": [0.02, 0.55], "pgd": [float("nan"), 0.97]}, index=["mlp", "lenet"])
    fig = heatmap_figure(table, title="t")
    ax = fig.axes[0]
    texts = {t.get_text(): to_rgb(t.get_color()) for t in ax.texts}
    assert set(texts) == {"0.02", "0.55", "0.97"}  # the missing cell is blank
    assert texts["0.02"] == (1.0, 1.0, 1.0)  # white on dark red
    assert texts["0.55"] == to_rgb(".15")  # dark on pale yellow
    assert [t.get_text() for t in ax.get_yticklabels()] == ["mlp", "lenet"]  # first model on top
    assert ax.get_ylim() == (2.0, 0.0)
    assert figure_png(fig).startswith(b"\x89PNG")
