"""Per-sample minimal epsilon: an analytic oracle, agreement with fixed-eps runs, and the suite hook."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from bench.attacks import AttackContext, AttackError, make_attack
from bench.engine import evaluate_cell, run_suite, tidy
from bench.minimal_eps import add_minimal_eps, bisect_minimal_eps, bisect_radii, grid_bracket, robust_curve, summarize
from bench.suite import SuiteError, validate

META = dict(suite="t", dataset="mnist5k", split="test", model="lenet", attack="a", attack_name="a",
            attack_params="{}", norm="linf", targeted=False, seed=0, device="cpu")  # fmt: skip


def test_fgsm_minimal_eps_matches_the_linear_oracle():
    # Two-class linear model on 2x2 inputs: along sign(w_other - w_label) the margin falls by
    # ||w_label - w_other||_1 per unit eps, so the minimal Linf eps is margin / ||w_label - w_other||_1.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    x = (0.5 + 0.05 * torch.randn(64, 1, 2, 2)).clamp(0.45, 0.55)  # x +- max_eps stays inside [0, 1]
    with torch.no_grad():
        logits = model(x)
    y = logits.argmax(1)  # every sample clean-correct
    w = model[1].weight.detach()
    margin = (logits.gather(1, y[:, None]) - logits.gather(1, (1 - y)[:, None])).squeeze(1)
    oracle = margin / (w[0] - w[1]).abs().sum()
    found = bisect_minimal_eps(make_attack("fgsm"), model, x, y, max_eps=0.4, iterations=20)
    reachable = oracle.numpy() < 0.4
    assert reachable.sum() > 10
    np.testing.assert_allclose(found[reachable], oracle.numpy()[reachable], atol=0.4 / 2**20 + 1e-6)
    assert np.isinf(found[~reachable]).all()
    assert (found[reachable] >= oracle.numpy()[reachable] - 1e-6).all()  # a real example sits at the value


@pytest.mark.parametrize(("name", "params", "grid", "tolerance"), [
    ("fgsm", {}, (0.0, 0.05, 0.1, 0.15, 0.2), 0.0),
    ("pgd", {"steps": 10, "random_start": False}, (0.0, 0.05, 0.1, 0.15, 0.2), 0.02),
    ("fgsm", {"norm": "l2"}, (0.0, 0.5, 1.0, 2.0), 0.0),
])  # fmt: skip
def test_curve_from_minimal_eps_agrees_with_fixed_eps_runs(name, params, grid, tolerance, lenet_mnist, mnist_test):
    data = mnist_test.subset(100)
    attack = make_attack(name, **params)
    ctx = AttackContext(seed=3)
    min_eps = bisect_minimal_eps(attack, lenet_mnist, data.x, data.y, max_eps=max(grid), iterations=8, ctx=ctx)
    arrays, _ = evaluate_cell(lenet_mnist, attack, data, grid, seed=3, device=torch.device("cpu"), batch_size=500)
    rows, _ = tidy(arrays, data=data, epsilons=grid, attack=attack, meta=META)
    clean_correct = arrays["clean_pred"] == data.y.numpy()
    curve = robust_curve(min_eps, clean_correct, grid)
    fixed = rows["robust_accuracy"].to_numpy()
    # FGSM's bisection probes the same ray as the fixed runs: the curves agree up to the bisection's
    # resolution (none of these samples sits within max_eps / 2**8 of a grid eps). Deterministic PGD
    # (no random start) is not exactly monotone in eps, hence a small tolerance.
    assert np.abs(curve - fixed).max() <= tolerance
    assert curve[0] == pytest.approx(clean_correct.mean())
    assert (min_eps[~clean_correct] == 0).all()
    summary = summarize(min_eps)
    assert 0 < summary["median"] <= max(grid) or np.isinf(summary["median"])


def test_summary_of_a_known_distribution():
    values = np.array([0.0, 0.1, 0.2, 0.3, np.inf, np.inf])
    summary = summarize(values)
    assert summary["median"] == 0.2 and summary["never_fooled"] == pytest.approx(1 / 3)
    np.testing.assert_allclose(robust_curve(values, np.ones(6, bool), [0.0, 0.15, 0.35]), [5 / 6, 4 / 6, 2 / 6])


def test_minimal_eps_refuses_other_attacks(lenet_digits, digits_test):
    with pytest.raises(AttackError, match=r"not available for attack 'uniform_noise' \(allowed: fgsm, bim, pgd\)"):
        bisect_minimal_eps(
            make_attack("uniform_noise"), lenet_digits, digits_test.x[:4], digits_test.y[:4], max_eps=0.1
        )


def _suite(attack: dict) -> dict:
    return {
        "name": "mineps",
        "dataset": {"name": "digits", "n": 40},
        "models": ["lenet"],
        "attacks": [attack, {"name": "uniform_noise"}],
        "epsilons": [0, 0.1, 0.2, 0.3],
        "tracking": {"enabled": False},
    }


def test_suite_run_stores_min_eps_per_sample_and_median_per_cell(tmp_path):
    suite = validate(_suite({"name": "fgsm", "minimal_eps": True}))
    outcome = run_suite(suite, out=tmp_path / "run", track=False, echo=None)
    results = pd.read_parquet(tmp_path / "run" / "results.parquet")
    samples = pd.read_parquet(tmp_path / "run" / "samples.parquet")
    fgsm = samples[samples.attack == "fgsm"]
    assert fgsm["min_eps"].notna().all()
    assert samples[samples.attack == "uniform_noise"]["min_eps"].isna().all()
    # The robust flags of the fixed-eps sweep agree with the minimal eps of each sample.
    robust_from_min = fgsm["min_eps"] > fgsm["eps"]
    assert (robust_from_min & (fgsm["clean_pred"] == fgsm["label"]) == fgsm["correct"]).mean() >= 0.95
    per_cell = results[results.attack == "fgsm"]["median_min_eps"].unique()
    one_eps = fgsm[fgsm.eps == 0.0]["min_eps"].to_numpy()
    assert per_cell.tolist() == [summarize(one_eps)["median"]]
    assert outcome.manifest["cell_extras"]["lenet__fgsm"]["minimal_eps"]["grad_evals"] == 40


def test_suite_validation_rejects_minimal_eps_for_other_attacks():
    with pytest.raises(SuiteError, match=r"attacks\[0\]\.minimal_eps: not available for attack 'occlusion'"):
        validate(_suite({"name": "occlusion", "minimal_eps": True}))


def test_grid_bracket_is_the_first_success_and_the_grid_eps_below_it():
    # grid given out of order; samples: fooled from 0.1, clean-wrong (eps 0), never, from the first eps
    epsilons = [0.2, 0.0, 0.1, 0.3]
    success = np.array(
        [
            [True, True, False, False],  # 0.2
            [False, True, False, False],  # 0.0
            [True, True, False, False],  # 0.1
            [True, True, False, True],  # 0.3
        ]
    )
    lo, hi = grid_bracket(epsilons, success)
    np.testing.assert_array_equal(hi, [0.1, 0.0, np.inf, 0.3])
    np.testing.assert_array_equal(lo, [0.0, 0.0, 0.0, 0.2])
    lo, hi = grid_bracket([0.05, 0.1], np.array([[True, False], [True, True]]))  # no eps 0 on the grid
    np.testing.assert_array_equal(lo, [0.0, 0.05])
    np.testing.assert_array_equal(hi, [0.05, 0.1])


@pytest.mark.parametrize("targeted", [False, True])
def test_pgd_bisection_starts_from_the_sweep_and_reproduces_its_curve(targeted, lenet_mnist, mnist_test):
    """The cell's bisection refines between the sweep's grid points: fewer gradients than from (0, max_eps],
    every minimal eps inside its grid bracket, and the curve read from them is the sweep's at each grid eps."""
    data = mnist_test.subset(120)
    grid = (0.0, 0.05, 0.1, 0.15, 0.2)
    params = {"steps": 10, "targeted": True, "target_mode": "random"} if targeted else {"steps": 10}
    attack = make_attack("pgd", **params)
    device = torch.device("cpu")
    arrays, _ = evaluate_cell(lenet_mnist, attack, data, grid, seed=5, device=device, batch_size=500)
    meta = {**META, "targeted": targeted}
    rows, samples = tidy(arrays, data=data, epsilons=grid, attack=attack, meta=meta)
    targets = arrays["target"] if targeted else None
    rows, samples, extras = add_minimal_eps(
        rows, samples, model=lenet_mnist, attack=attack, data=data, epsilons=grid, seed=5, device=device,
        batch_size=500, iterations=8, targets=targets,
    )  # fmt: skip
    min_eps = samples["min_eps"].to_numpy()[: len(data)]
    adv = arrays["adv_pred"]
    success = adv == arrays["target"][None, :] if targeted else adv != data.y.numpy()[None, :]
    lo, hi = grid_bracket(grid, success)
    finite = np.isfinite(hi)
    assert finite.any()
    assert np.isinf(min_eps[~finite]).all()
    inside = (min_eps[finite] > lo[finite]) | (min_eps[finite] == 0)
    assert inside.all() and (min_eps[finite] <= hi[finite]).all()
    assert (min_eps[finite] < hi[finite]).any()  # refined below the grid, not just the grid's values
    if not targeted:  # the curve from minimal eps is the sweep's at every grid eps
        clean_correct = arrays["clean_pred"] == data.y.numpy()
        np.testing.assert_array_equal(
            robust_curve(min_eps, clean_correct, grid), rows.sort_values("eps")["robust_accuracy"].to_numpy()
        )
    # from (0, max_eps] instead: a probe at max_eps and two more halvings per sample
    ctx = AttackContext(seed=5)
    bisect_minimal_eps(
        attack, lenet_mnist, data.x, data.y, max_eps=max(grid), iterations=8, ctx=ctx,
        target=None if targets is None else torch.as_tensor(targets),
    )  # fmt: skip
    assert extras["grad_evals"] < 0.8 * ctx.grad_evals


def test_a_bracket_outside_zero_to_max_eps_is_refused():
    never = lambda eps, rows: torch.zeros(len(rows), dtype=torch.bool)  # noqa: E731
    for lo, hi in (([0.0, 0.5], [0.5, 0.8]), ([0.2, 0.0], [0.1, 0.1]), ([-0.1, 0.0], [0.1, 0.1]), ([0.0], [0.1])):
        with pytest.raises(AttackError, match="bracket"):
            bisect_radii(never, 2, max_eps=0.1, iterations=4, device=torch.device("cpu"), bracket=(lo, hi))
    found = bisect_radii(
        never, 2, max_eps=0.1, iterations=4, device=torch.device("cpu"), bracket=([0.0, 0.05], [np.inf, 0.1])
    )
    assert np.isinf(found[0]) and found[1] == 0.1  # never succeeding below hi: hi itself
