"""The report's one definition of minimal eps: the worst case is never above any attack's value."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench import stats
from reports.sample_index import forget_computed
from reports.sources import load_run
from reports.tables import WORST_CASE, leaderboard, per_sample_minimal_eps, summary_tables


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """mlp on 80 digits: FGSM and PGD bisected (``minimal_eps: true``), BIM and uniform noise on the grid only."""
    from bench.engine import run_suite
    from bench.suite import validate

    suite = validate(
        {
            "name": "worst-case-test",
            "dataset": {"name": "digits", "n": 80},
            "models": ["mlp"],
            "attacks": [
                {"name": "fgsm", "minimal_eps": True},
                {"name": "pgd", "minimal_eps": True, "params": {"steps": 5}},
                {"name": "bim", "params": {"steps": 5}},
                "uniform_noise",
            ],
            "epsilons": [0, 0.05, 0.1, 0.2, 0.3],
            "tracking": {"enabled": False, "examples": 0},
        }
    )
    out = tmp_path_factory.mktemp("worst-case") / "run"
    run_suite(suite, out=out, track=False, echo=None)
    return out


def test_worst_case_minimal_eps_is_never_above_any_attack(mixed_run: Path) -> None:
    run = load_run(mixed_run)
    (table,) = summary_tables(run.results, run.samples)
    attacks = [r for r in table.rows if not r.attacks_in_worst_case]
    (worst,) = [r for r in table.rows if r.attacks_in_worst_case]
    assert worst.attack == WORST_CASE and len(attacks) == 4
    for row in attacks:
        assert worst.median_min_eps <= row.median_min_eps, row.attack
        for eps, interval in worst.by_eps.items():
            assert interval.value <= row.by_eps[eps].value, (row.attack, eps)
    # the bisected rows are the engine's own medians, the grid rows the curve's
    for row in attacks:
        cell = run.results[run.results["attack"] == row.attack].sort_values("eps")
        if cell["median_min_eps"].notna().any():
            assert row.median_min_eps == pytest.approx(float(cell["median_min_eps"].iloc[0]))
        else:
            grid = float(cell.loc[cell["robust_accuracy"] <= 0.5, "eps"].min())
            assert row.median_min_eps == (grid if not math.isnan(grid) else math.inf)
    # the worst case's median is the median of the per-sample minimum over attacks
    per_attack = pd.concat(
        [per_sample_minimal_eps(part) for _, part in run.samples.groupby("attack", sort=False)], axis=1
    )
    assert worst.median_min_eps == float(np.quantile(per_attack.min(axis=1), 0.5, method="lower"))
    assert worst.median_min_eps < max(r.median_min_eps for r in attacks)


def test_leaderboard_reads_the_worst_case_at_the_reference_eps(mixed_run: Path) -> None:
    run = load_run(mixed_run)
    board = leaderboard(run.results, run.samples)
    assert list(board.columns) == ["model", "clean_accuracy", "robust_linf", "auc_linf", "auc_linf_partial"]
    assert board.attrs["reference_eps"] == {"linf": 0.1}
    (row,) = board.to_dict("records")
    at = run.samples[run.samples["eps"] == 0.1]
    assert row["robust_linf"] == at.groupby("index")["correct"].all().mean()
    assert row["robust_linf"] <= run.results.loc[run.results["eps"] == 0.1, "robust_accuracy"].min()
    (table,) = summary_tables(run.results, run.samples)
    (worst,) = [r for r in table.rows if r.attacks_in_worst_case]
    curve = sorted(worst.by_eps.items())
    expected = stats.reference_auc([e for e, _ in curve], [v.value for _, v in curve], "linf")
    assert (row["auc_linf"], row["auc_linf_partial"]) == (expected.value, False)


def test_reference_auc_is_the_same_for_the_same_curve_on_different_grids() -> None:
    # one model's curve, linear from 1 at eps 0 to 0 at eps 0.3, sampled on two suites' grids
    coarse, fine = np.array([0, 0.1, 0.2, 0.3]), np.array([0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4])
    curve = lambda e: np.clip(1 - e / 0.3, 0, 1)  # noqa: E731
    a, b = stats.reference_auc(coarse, curve(coarse), "linf"), stats.reference_auc(fine, curve(fine), "linf")
    assert a.value == pytest.approx(0.5) and b.value == pytest.approx(0.5) and not a.partial and not b.partial
    # the suite-range AUC differs (the fine grid runs on to 0.4): that is why the reference range exists
    assert stats.curve_auc(coarse, curve(coarse)) != pytest.approx(stats.curve_auc(fine, curve(fine)))
    short = stats.reference_auc(coarse[:3], curve(coarse[:3]), "linf")
    assert short.partial and short.value > 0.5  # extended flat past 0.2: an upper bound
    assert math.isnan(stats.reference_auc([0], [0.3], "none").value)


def test_per_sample_worst_case_matches_a_brute_force_count_with_partial_attacks() -> None:
    """Per eps: robust = correct under every attack, counted over the samples every attack at that eps ran
    (an attack limited to its first n samples limits the worst case to them)."""
    from reports.tables import worst_case_at, worst_case_row

    rng = np.random.default_rng(3)
    grid = [0.0, 0.1, 0.2, 0.3]
    ran = {"fgsm": 40, "pgd": 40, "reliable": 15}  # reliable ran the first 15 samples only
    rows, cells = [], []
    for attack, n in ran.items():
        fooled_at = rng.choice([0.1, 0.2, 0.3, np.inf], size=n)
        for eps in grid:
            correct = fooled_at > eps
            rows += [
                {"model": "m", "attack": attack, "eps": eps, "index": i, "correct": bool(c)}
                for i, c in enumerate(correct)
            ]
            cells.append(
                {
                    "model": "m",
                    "attack": attack,
                    "norm": "linf",
                    "eps": eps,
                    "clean_accuracy": 1.0,
                    "robust_accuracy": float(correct.mean()),
                    "ci_low": 0.0,
                    "ci_high": 1.0,
                }
            )
    samples, cells_frame = pd.DataFrame(rows), pd.DataFrame(cells)
    row = worst_case_row("m", cells_frame, samples)
    for eps in grid:
        at = samples[samples["eps"] == eps]
        everyone = set.intersection(*(set(at.loc[at["attack"] == a, "index"]) for a in ran))
        robust = sum(bool(at[(at["index"] == i)]["correct"].all()) for i in everyone)
        assert len(everyone) == 15
        assert row.by_eps[eps].value == pytest.approx(robust / 15)
        # worst_case_at's own per-eps path: a copy whose content's computations are forgotten
        forget_computed()
        assert worst_case_at("m", cells_frame, samples.copy(), eps) == row.by_eps[eps]
    # without the limited attack the worst case covers all 40 samples again
    two = cells_frame[cells_frame["attack"] != "reliable"]
    assert worst_case_at("m", two, samples[samples["attack"] != "reliable"], 0.1).value == pytest.approx(
        samples[(samples["eps"] == 0.1) & (samples["attack"] != "reliable")].groupby("index")["correct"].all().mean()
    )


def test_a_second_reading_of_the_same_flags_reuses_the_worst_cases_and_a_changed_copy_does_not(
    mixed_run: Path,
) -> None:
    """``bench run`` reads samples.parquet for its summary, its report and the MLflow mirror: one computation."""
    from reports.sample_index import KEEP, cell_index

    first, again = load_run(mixed_run), load_run(mixed_run)
    assert first.samples is not again.samples
    board = leaderboard(first.results, first.samples)
    shared = cell_index(again.samples).computed
    assert shared is cell_index(first.samples).computed and shared.worst and shared.min_eps
    pd.testing.assert_frame_equal(leaderboard(again.results, again.samples), board)

    # One flag flipped: other content, computed on its own, and its numbers follow the flip.
    changed = again.samples.copy()
    fooled = (changed["model"] == "mlp") & (changed["attack"] == "fgsm") & changed["correct"]
    changed.loc[fooled[fooled].index[:5], ["correct", "correct_pointwise"]] = False
    assert cell_index(changed).computed is not shared
    before, after = summary_tables(first.results, first.samples)[0], summary_tables(first.results, changed)[0]
    worst_before = next(r for r in before.rows if r.attacks_in_worst_case)
    worst_after = next(r for r in after.rows if r.attacks_in_worst_case)
    assert any(worst_after.by_eps[e].value < worst_before.by_eps[e].value for e in worst_before.by_eps)

    # Only the last KEEP contents outlive their frames.
    for k in range(KEEP):
        other = again.samples.copy()
        other.loc[other.index[k], "linf"] += 1.0
        cell_index(other)
    assert cell_index(load_run(mixed_run).samples).computed is not shared


def test_the_content_digest_changes_with_any_value_and_only_with_the_values() -> None:
    """Exact: a run directory is untrusted, so two frames may share computations only when every value agrees."""
    from reports.sample_index import content_digest

    base = pd.DataFrame(
        {
            "model": ["ab", "c", "ab", "c"],
            "attack": ["fgsm", "pgd", "fgsm", "pgd"],
            "eps": [0.0, 0.1, 0.2, 0.3],
            "index": [0, 1, 2, 3],
            "correct": [True, False, True, True],
            "l2": np.array([0.5, 1.5, 2.5, 3.5], dtype=np.float32),
        }
    )
    digest = content_digest(base)
    assert content_digest(base.copy()) == digest
    assert content_digest(base.set_axis([7, 8, 9, 10])) == digest  # the frame index is not content
    changed = {
        "float one ulp": base.assign(eps=np.nextafter(base["eps"], 1.0)),
        "float32 one ulp": base.assign(l2=np.nextafter(base["l2"], np.float32(9))),
        "one flag": base.assign(correct=[True, False, True, False]),
        "one name": base.assign(model=["ab", "c", "ab", "d"]),
        "names split differently": base.assign(model=["a", "bc", "a", "bc"]),
        "two rows swapped": base.iloc[[1, 0, 2, 3]].reset_index(drop=True),
        "an int where a string was": base.assign(model=pd.Series(["ab", 1, "ab", "c"], dtype=object)),
        "a dtype": base.assign(index=base["index"].astype(np.int32)),
        "a column renamed": base.rename(columns={"l2": "linf"}),
        "a row fewer": base.iloc[:3],
    }
    digests = {name: content_digest(frame) for name, frame in changed.items()}
    assert digest not in digests.values()
    assert len(set(digests.values())) == len(digests)


def test_a_model_without_flags_is_read_off_its_own_results_every_time() -> None:
    """Worst cases are kept by the samples' content; a model with no flags in them is read off the results,
    which that content does not describe: two runs must not get each other's numbers."""
    from reports.tables import worst_case_row

    flags_of_another_model = pd.DataFrame(
        {"model": "other", "attack": "fgsm", "eps": [0.0, 0.1], "index": [0, 0], "correct": [True, False]}
    )

    def results(accuracy: float) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "model": "m",
                "attack": "fgsm",
                "norm": "linf",
                "eps": [0.0, 0.1],
                "clean_accuracy": 1.0,
                "robust_accuracy": [1.0, accuracy],
                "ci_low": [0.9, accuracy - 0.05],
                "ci_high": [1.0, accuracy + 0.05],
            }
        )

    for samples in (flags_of_another_model, flags_of_another_model.iloc[:0]):
        for accuracy in (0.9, 0.2, 0.9):
            row = worst_case_row("m", results(accuracy), samples.copy())
            assert row.by_eps[0.1].value == accuracy
