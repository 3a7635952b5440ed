"""The reliable-evaluation preset (``reliable``): worst case of its members, only still-robust samples attacked,
monotone sweeps, the per-sample ``broken_by`` column, the leaderboard headline, and ART's AutoAttack as reference.

Default run: digits LeNet, small budgets. ``slow``: mnist5k LeNet against ART's AutoAttack at its own budget.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from bench import stats
from bench.attacks import AttackContext, AttackError, make_attack
from bench.attacks.art import art_classifier
from bench.engine import evaluate_cell, tidy
from reports.tables import leaderboard

GRID = (0.0, 0.05, 0.1, 0.2)
DETERMINISTIC = {"members": ["fgsm", "bim", "pgd"], "member_params": {"pgd": {"random_start": False, "steps": 8}}}
"""Members without randomness: a sample's fate under each does not depend on which other samples share its batch."""


def _meta(name: str, attack) -> dict:
    return dict(suite="t", dataset="digits", split="test", model="lenet", attack=name, attack_name=name,
                attack_params="{}", norm=attack.norm.value, targeted=attack.targeted, seed=0, device="cpu")  # fmt: skip


def _cumulative_robust(model, attack, x, y, epsilons) -> np.ndarray:
    """``(E, N)``: robust (clean-correct, never fooled at this eps or a smaller one) under ``attack`` alone."""
    clean = model(x).argmax(1) == y
    flags = []
    for eps in epsilons:
        x_adv = attack(model, x, y, eps, ctx=AttackContext(seed=3))
        flags.append((model(x_adv).argmax(1) == y) & clean)
    return np.logical_and.accumulate(torch.stack(flags).numpy(), axis=0)


def test_the_ensemble_is_the_per_sample_worst_case_of_its_members(lenet_digits, digits_test) -> None:
    data = digits_test.subset(64)
    attack = make_attack("reliable", **DETERMINISTIC)
    arrays, extras = evaluate_cell(lenet_digits, attack, data, GRID, seed=1, device=torch.device("cpu"), batch_size=32)
    rows, samples = tidy(arrays, data=data, epsilons=GRID, attack=attack, meta=_meta("reliable", attack))
    ensemble = samples["correct"].to_numpy().reshape(len(GRID), len(data))
    alone = [_cumulative_robust(lenet_digits, member, data.x, data.y, GRID) for _, member in attack.built_members()]
    # never more robust than any member alone, and exactly the samples no member breaks
    for flags in alone:
        assert not (ensemble & ~flags).any()
    assert np.array_equal(ensemble, np.logical_and.reduce(alone))
    # not vacuous: some samples stand at 0.05, all fall by 0.2, and later members break what fgsm missed
    assert ensemble[1].sum() > 0 and ensemble[-1].sum() < ensemble[0].sum()
    assert not np.array_equal(ensemble, alone[0])
    # broken_by names a member for exactly the samples that fell, "clean" for the misclassified ones
    broken_by = samples["broken_by"].to_numpy().reshape(len(GRID), len(data))
    clean_wrong = arrays["clean_pred"] != data.y.numpy()
    assert ((broken_by == "") == ensemble).all()
    assert ((broken_by == "clean") == clean_wrong[None, :]).all()
    assert set(np.unique(broken_by)) <= {"", "clean", "fgsm", "bim", "pgd"}
    # a sample broken at a smaller eps keeps its breaker; the counts are the column's
    for i in range(1, len(GRID)):
        kept = broken_by[i - 1] != ""
        assert (broken_by[i][kept] == broken_by[i - 1][kept]).all()
    counts = extras["broken_by_counts"]["0.2"]
    assert sum(counts.values()) == int((broken_by[-1] != "").sum())
    assert counts["clean"] == int(clean_wrong.sum())
    acc = rows["robust_accuracy"].to_numpy()
    assert (np.diff(acc) <= 0).all() and np.allclose(acc, ensemble.mean(axis=1))


def test_only_still_robust_samples_are_attacked(lenet_digits, digits_test) -> None:
    x, y = digits_test.x[:64], digits_test.y[:64]
    attack = make_attack("reliable", members=["fgsm", "bim"])
    ctx = AttackContext(seed=5)
    sweep = attack.sweep(lenet_digits, x, y, [0.05, 0.1], ctx=ctx)
    results = dict(sweep)
    attacked = sweep.extras["attacked"]
    with torch.no_grad():
        clean = lenet_digits(x).argmax(1) == y
        after_fgsm = clean & (lenet_digits(make_attack("fgsm")(lenet_digits, x, y, 0.05)).argmax(1) == y)
        robust_005 = (lenet_digits(results[0.05]).argmax(1) == y) & clean
    # fgsm gets the clean-correct samples, bim only what fgsm left; the next eps only what stood at 0.05
    assert attacked["0.05"] == {"fgsm": int(clean.sum()), "bim": int(after_fgsm.sum())}
    assert attacked["0.1"]["fgsm"] == int(robust_005.sum()) < int(clean.sum())
    # the gradients spent are those of each member on its own subset, nothing more
    bim_alone = AttackContext(seed=0)
    make_attack("bim")(lenet_digits, x[after_fgsm], y[after_fgsm], 0.05, ctx=bim_alone)
    spent_005 = int(clean.sum()) + bim_alone.grad_evals
    bim_next = AttackContext(seed=0)
    after_fgsm_01 = robust_005 & (lenet_digits(make_attack("fgsm")(lenet_digits, x, y, 0.1)).argmax(1) == y)
    make_attack("bim")(lenet_digits, x[after_fgsm_01], y[after_fgsm_01], 0.1, ctx=bim_next)
    assert ctx.grad_evals == spent_005 + int(robust_005.sum()) + bim_next.grad_evals


def test_same_seed_same_result_and_eps_order_does_not_matter(lenet_digits, digits_test) -> None:
    x, y = digits_test.x[:32], digits_test.y[:32]
    attack = make_attack("reliable", members=["pgd", "square"], member_params={"square": {"max_iter": 50}})
    first = dict(attack.sweep(lenet_digits, x, y, [0.05, 0.1], ctx=AttackContext(seed=9)))
    shuffled = dict(attack.sweep(lenet_digits, x, y, [0.1, 0.05], ctx=AttackContext(seed=9)))
    assert all(torch.equal(first[e], shuffled[e]) for e in (0.05, 0.1))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"members": []}, "members must be a non-empty list"),
        ({"members": ["pgdd"]}, "member 'pgdd'"),
        ({"members": ["pgd", "pgd"]}, "distinct"),
        ({"members": ["pgd"], "member_params": {"square": {"max_iter": 5}}}, "'square', not a member"),
        ({"members": ["pgd"], "member_params": {"pgd": {"norm": "l2"}}}, "set by the preset"),
        ({"members": ["pgd"], "member_params": {"pgd": {"stepz": 3}}}, "no parameter 'stepz'"),
        ({"members": ["reliable"]}, "not allowed"),
        ({"members": ["fooling_images"]}, "member 'fooling_images'"),
        ({"norm": "l0"}, "not supported"),
    ],
)
def test_bad_parameters_fail_in_one_line(params, message) -> None:
    with pytest.raises(AttackError, match=message) as info:
        make_attack("reliable", **params)
    assert "\n" not in str(info.value)


def test_defaults_are_autoattacks_standard_members() -> None:
    attack = make_attack("reliable")
    members = dict(attack.built_members())
    assert list(members) == ["apgd", "apgd_t", "square"]
    assert members["apgd"].params()["loss"] == "ce" and members["apgd"].params()["steps"] == 100
    assert members["apgd_t"].params()["n_target_classes"] == 9
    assert members["square"].params()["max_iter"] == 5000
    l2 = dict(make_attack("reliable", norm="l2").built_members())
    assert all(m.norm.value == "l2" for m in l2.values())
    assert repr(l2["square"]).startswith("art:SquareAttack(")  # the native square is linf only


def test_leaderboard_headline_is_the_reliable_preset() -> None:
    def row(attack: str, name: str, acc: float) -> dict:
        return {"model": "m", "attack": attack, "attack_name": name, "norm": "linf", "targeted": False, "eps": 0.1,
                "clean_accuracy": 0.9, "robust_accuracy": acc, "ci_low": acc - 0.1, "ci_high": acc + 0.1}  # fmt: skip

    both = pd.DataFrame([row("pgd", "pgd", 0.4), row("reliable", "reliable", 0.5)])
    board = leaderboard(both, None)
    assert board.loc[0, "robust_linf"] == 0.5 and board.attrs["headline"] == {"linf": "reliable"}
    without = leaderboard(both[both["attack"] == "pgd"], None)
    assert without.loc[0, "robust_linf"] == 0.4 and without.attrs["headline"] == {"linf": "worst case"}


def _art_autoattack(model, x, y, eps: float, *, iters: int, queries: int) -> torch.Tensor:
    # ART is heavy and optional: imported only where it is the reference
    from art.attacks.evasion import AutoAttack, AutoProjectedGradientDescent, SquareAttack

    classifier = art_classifier(model, input_shape=tuple(x.shape[1:]), nb_classes=10)
    common = {"norm": np.inf, "eps": eps, "eps_step": 2 * eps, "max_iter": iters, "nb_random_init": 1}
    attacks = [
        AutoProjectedGradientDescent(classifier, loss_type="cross_entropy", verbose=False, **common),
        AutoProjectedGradientDescent(classifier, loss_type="difference_logits_ratio", verbose=False, **common),
        SquareAttack(classifier, norm=np.inf, eps=eps, max_iter=queries, verbose=False),
    ]
    np.random.seed(0)
    aa = AutoAttack(classifier, norm=np.inf, eps=eps, attacks=attacks, batch_size=len(x))
    return torch.as_tensor(aa.generate(x.numpy(), y=np.eye(10, dtype=np.float32)[y.numpy()]))


def _paired_against_art(model, x, y, eps: float, *, iters: int, queries: int) -> dict:
    budget = {"apgd": {"steps": iters}, "apgd_t": {"steps": iters}, "square": {"max_iter": queries}}
    ours_x = make_attack("reliable", member_params=budget)(model, x, y, eps, ctx=AttackContext(seed=2))
    theirs_x = _art_autoattack(model, x, y, eps, iters=iters, queries=queries)
    with torch.no_grad():
        clean = model(x).argmax(1) == y
        ours = ((model(ours_x).argmax(1) == y) & clean).numpy()
        theirs = ((model(theirs_x).argmax(1) == y) & clean).numpy()
    only_ours, only_art = int((ours & ~theirs).sum()), int((~ours & theirs).sum())
    return {"ours": ours.mean(), "art": theirs.mean(), "p": stats.mcnemar_p(only_ours, only_art, mid_p=False)}


def test_not_significantly_more_robust_than_art_autoattack(lenet_digits, digits_test) -> None:
    model = lenet_digits
    x, y = digits_test.x[:64], digits_test.y[:64]
    result = _paired_against_art(model, x, y, 0.1, iters=20, queries=100)
    assert result["p"] >= 1e-3, result
    assert result["ours"] < (model(x).argmax(1) == y).float().mean()  # it breaks something at this eps


@pytest.mark.slow
def test_not_significantly_more_robust_than_art_autoattack_on_mnist5k(lenet_mnist, mnist_test) -> None:
    x, y = mnist_test.x[:200], mnist_test.y[:200]
    result = _paired_against_art(lenet_mnist, x, y, 0.1, iters=100, queries=1000)
    assert result["p"] >= 1e-3, result


def test_a_suite_run_writes_broken_by_and_the_counts(tmp_path) -> None:
    from bench.engine import run_suite
    from bench.suite import validate

    suite = validate(
        {
            "name": "reliable-tiny",
            "dataset": {"name": "digits", "n": 40},
            "models": ["lenet"],
            "attacks": [
                {"name": "fgsm"},
                {"name": "reliable", "params": {"members": ["fgsm", "pgd"], "member_params": {"pgd": {"steps": 5}}}},
            ],
            "epsilons": [0, 0.1, 0.2],
        }
    )
    run_suite(suite, out=tmp_path / "run", echo=None)
    samples = pd.read_parquet(tmp_path / "run" / "samples.parquet")
    mine = samples[samples["attack"] == "reliable"]
    assert set(mine["broken_by"].unique()) <= {"", "clean", "fgsm", "pgd"}
    assert ((mine["broken_by"] == "") == mine["correct"]).all()
    assert samples.loc[samples["attack"] == "fgsm", "broken_by"].isna().all()
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    counts = manifest["cell_extras"]["lenet__reliable"]["broken_by_counts"]
    assert sum(counts["0.2"].values()) == int((mine[mine["eps"] == 0.2]["broken_by"] != "").sum())
    # the report's leaderboard names what its robust column is: the preset, not a worst case over attacks
    report = (tmp_path / "run" / "report" / "report.md").read_text()
    assert "| linf reliable @ 0.1 |" in report and "worst case @" not in report


def test_native_square_is_not_weaker_than_arts(lenet_digits, digits_test) -> None:
    """The native Linf Square Attack against ART's ``SquareAttack`` at the same query budget (paired)."""
    x, y = digits_test.x[:64], digits_test.y[:64]
    ours_x = make_attack("square", max_iter=100)(lenet_digits, x, y, 0.1, ctx=AttackContext(seed=4))
    theirs_x = make_attack("art:SquareAttack", norm="linf", max_iter=100)(
        lenet_digits, x, y, 0.1, ctx=AttackContext(seed=4)
    )
    with torch.no_grad():
        clean = lenet_digits(x).argmax(1) == y
        ours = (lenet_digits(ours_x).argmax(1) == y) & clean
        theirs = (lenet_digits(theirs_x).argmax(1) == y) & clean
    assert int(ours.sum()) < int(clean.sum())  # it breaks something without a gradient
    p = stats.mcnemar_p(int((ours & ~theirs).sum()), int((~ours & theirs).sum()), mid_p=False)
    assert p >= 1e-3, (ours.float().mean(), theirs.float().mean())
