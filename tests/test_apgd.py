"""Native APGD (``apgd``, ``apgd_t``): the paper's schedule and losses, ART's counterpart, PGD, a linear oracle.

Default run: tiny digits models and small n (seconds). ``slow``: the cross-check on mnist5k LeNet.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import trained
from test_oracle import _closed_form, _linear_problem

from bench import stats
from bench.attacks import ATTACKS, AttackContext, AttackError, make_attack
from bench.attacks.apgd import apgd_to_art
from bench.attacks.apgd_loss import ce_loss, checkpoint_fractions, checkpoints, dlr_loss, targeted_dlr_loss
from bench.attacks.art import ArtAttack
from bench.crosscheck import Pair, compare_pair
from bench.types import AttackFamily, Bounds

ALPHA = 0.001
"""The cross-check's significance level (paired McNemar), restated so a loosened constant cannot pass."""


def _robust(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor) -> np.ndarray:
    """Pointwise robust flags ``(N,)``: clean-correct and still correct on ``x_adv``."""
    with torch.no_grad():
        return ((model(x).argmax(1) == y) & (model(x_adv).argmax(1) == y)).numpy()


def _not_weaker_than_art(native: np.ndarray, art: np.ndarray) -> None:
    """Native robust accuracy not significantly higher than ART's on the same samples (one-sided McNemar)."""
    lost, gained = int((art & ~native).sum()), int((~art & native).sum())  # gained: robust only under native
    p = stats.mcnemar_p(gained, lost, mid_p=False)
    assert p >= ALPHA, f"native robust on {gained} samples ART broke, ART robust on {lost} native broke (p={p:.2g})"


# -- the paper's schedule and losses ---------------------------------------------------------
def test_checkpoints_follow_the_paper() -> None:
    np.testing.assert_allclose(checkpoint_fractions(), [0, 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99])
    assert checkpoints(100) == [0, 22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(10) == [0, 3, 5, 6, 7, 8, 9, 10]  # ceil, distinct
    assert checkpoints(1) == [0, 1]


def test_dlr_losses_on_hand_made_logits() -> None:
    logits = torch.tensor([[3.0, 1.0, 0.0, -1.0], [3.0, 1.0, 0.0, -1.0], [0.5, 2.0, 4.0, 1.0]])
    y = torch.tensor([0, 2, 1])
    # sorted: (3, 1, 0, -1), (3, 1, 0, -1), (4, 2, 1, 0.5)
    expected = torch.tensor([-(3 - 1) / (3 - 0), -(0 - 3) / (3 - 0), -(2 - 4) / (4 - 1)])
    torch.testing.assert_close(dlr_loss(logits, y), expected)
    target = torch.tensor([3, 1, 0])
    expected_t = torch.tensor(
        [-(3 - -1) / (3 - 0.5 * (0 - 1)), -(0 - 1) / (3 - 0.5 * (0 - 1)), -(2 - 0.5) / (4 - 0.75)]
    )
    torch.testing.assert_close(targeted_dlr_loss(logits, y, target), expected_t)
    # DLR is invariant to shifting and positive scaling of the logits; CE is the usual per-sample loss.
    torch.testing.assert_close(dlr_loss(7 * logits - 2, y), dlr_loss(logits, y))
    torch.testing.assert_close(ce_loss(logits, y), F.cross_entropy(logits, y, reduction="none"))
    torch.testing.assert_close(ce_loss(logits, y, target), -F.cross_entropy(logits, target, reduction="none"))


def test_declarations_and_bad_parameters() -> None:
    for name in ("apgd", "apgd_t"):
        assert ATTACKS.abilities(name).family is AttackFamily.ITERATIVE
    art_class, options = apgd_to_art(make_attack("apgd", loss="dlr", norm="l2", steps=50, restarts=3), 0.5)
    assert art_class == "AutoProjectedGradientDescent"
    assert options == {
        "norm": "l2",
        "eps_step": 1.0,
        "max_iter": 50,
        "targeted": False,
        "nb_random_init": 3,
        "loss_type": "difference_logits_ratio",
    }
    attack = make_attack("apgd_t", n_target_classes=3, steps=5)
    assert "n_target_classes=3" in repr(attack) and not attack.targeted
    with pytest.raises(AttackError, match=r"loss 'hinge' is not allowed \(allowed: ce, dlr\)"):
        make_attack("apgd", loss="hinge")
    with pytest.raises(AttackError, match="steps must be an integer >= 1"):
        make_attack("apgd", steps=0)
    with pytest.raises(AttackError, match=r"rho must be a number in \(0, 1\]"):
        make_attack("apgd", rho=1.5)
    with pytest.raises(AttackError, match="n_target_classes must be an integer >= 1"):
        make_attack("apgd_t", n_target_classes=0)
    with pytest.raises(AttackError, match="targeted mode is not supported"):
        make_attack("apgd_t", targeted=True)
    model, x, y = _linear_problem(0)  # two classes: DLR needs three
    with pytest.raises(AttackError, match="the dlr loss needs at least 3 classes, the model has 2"):
        make_attack("apgd", loss="dlr", steps=2)(model, x[:4], y[:4], 0.1)


# -- behaviour on a model with a known answer --------------------------------------------------
@pytest.mark.parametrize(("norm", "p", "eps"), [("linf", 1.0, 0.02), ("l2", 2.0, 0.08)])
def test_linear_oracle(norm: str, p: float, eps: float) -> None:
    """On a two-class linear model a sample can be fooled within eps iff its closed-form distance is below eps."""
    model, x, y = _linear_problem(1)
    distance = _closed_form(model, x, y, p)
    x_adv = make_attack("apgd", norm=norm, steps=10)(model, x, y, eps, bounds=Bounds(0.0, 1.0))
    with torch.no_grad():
        fooled = (model(x_adv).argmax(1) != y).numpy()
    assert fooled[distance < 0.99 * eps].all()
    assert not fooled[distance > eps].any()
    assert 0 < fooled.sum() < len(y)


def test_at_least_as_strong_as_pgd_at_the_same_budget(digits_test) -> None:
    model = trained("lenet", "digits")
    x, y = digits_test.x[:120], digits_test.y[:120]
    for eps in (0.03, 0.06):
        pgd = make_attack("pgd", steps=20)(model, x, y, eps, ctx=AttackContext(seed=1))
        apgd = make_attack("apgd", steps=20)(model, x, y, eps, ctx=AttackContext(seed=1))
        robust_pgd, robust_apgd = _robust(model, x, y, pgd), _robust(model, x, y, apgd)
        assert 0 < robust_apgd.sum() <= robust_pgd.sum(), eps
        # per sample: the samples only PGD breaks are fewer than those only APGD breaks (or equal)
        assert (robust_apgd & ~robust_pgd).sum() <= (robust_pgd & ~robust_apgd).sum(), eps


def test_sweep_early_stop_restarts_and_batching(lenet_digits, digits_test) -> None:
    model, x, y = lenet_digits, digits_test.x[:32], digits_test.y[:32]
    attack = make_attack("apgd", steps=10)
    ctx = AttackContext(seed=3)
    sweep = attack.sweep(model, x, y, [0.2, 0.05, 0.1], ctx=ctx)
    results = dict(sweep)
    attacked = sweep.extras["attacked"]
    # Sweep-aware: a sample fooled at a smaller eps is not attacked again, and stays fooled.
    robust = {eps: _robust(model, x, y, results[eps]) for eps in results}
    assert attacked["0.1"] == int((~_fooled_or_wrong(model, x, y, results[0.05])).sum())
    assert attacked["0.05"] == 32 and attacked["0.2"] < attacked["0.1"] < 32
    assert (robust[0.2] <= robust[0.1]).all() and (robust[0.1] <= robust[0.05]).all()
    # Early stop keeps the first fooling point: fewer gradients, the same verdicts as running every step.
    eager, patient = AttackContext(seed=3), AttackContext(seed=3)
    fast = make_attack("apgd", steps=10)(model, x, y, 0.1, ctx=eager)
    full = make_attack("apgd", steps=10, early_stop=False)(model, x, y, 0.1, ctx=patient)
    assert eager.grad_evals < patient.grad_evals == 32 * 10
    np.testing.assert_array_equal(_robust(model, x, y, fast), _robust(model, x, y, full))
    # Restarts attack only the samples still robust; model calls split by batch_size give the same examples.
    once, twice = AttackContext(seed=3), AttackContext(seed=3)
    make_attack("apgd", steps=10)(model, x, y, 0.1, ctx=once)
    again = make_attack("apgd", steps=10, restarts=2)(model, x, y, 0.1, ctx=twice)
    assert once.grad_evals < twice.grad_evals < 2 * once.grad_evals
    assert _robust(model, x, y, again).sum() <= _robust(model, x, y, fast).sum()
    split = make_attack("apgd", steps=10)(model, x, y, 0.1, ctx=AttackContext(seed=3, batch_size=7))
    torch.testing.assert_close(split, fast)


def _fooled_or_wrong(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return (model(x_adv).argmax(1) != y).numpy()


def test_apgd_t_attacks_each_target_on_the_still_robust(lenet_digits, digits_test) -> None:
    model, x, y = lenet_digits, digits_test.x[:32], digits_test.y[:32]
    one, three = AttackContext(seed=5), AttackContext(seed=5)
    first = make_attack("apgd_t", n_target_classes=1, steps=10)(model, x, y, 0.05, ctx=one)
    more = make_attack("apgd_t", n_target_classes=3, steps=10)(model, x, y, 0.05, ctx=three)
    robust_first, robust_more = _robust(model, x, y, first), _robust(model, x, y, more)
    assert robust_first.sum() > 0 and (robust_more <= robust_first).all()
    # the 2nd and 3rd passes attack only samples the first pass left robust: fewer than 3x the gradients
    assert one.grad_evals < three.grad_evals < 3 * one.grad_evals


# -- against ART's AutoProjectedGradientDescent ------------------------------------------------
@pytest.mark.parametrize(
    "params",
    [
        {"norm": "linf", "loss": "ce"},
        {"norm": "l2", "loss": "dlr"},
        {"norm": "linf", "loss": "ce", "targeted": True},
    ],
    ids=["linf-ce", "l2-dlr", "linf-ce-targeted"],
)
def test_not_weaker_than_art_on_digits(params: dict, digits_test) -> None:
    model = trained("lenet", "digits")
    eps = 0.06 if params["norm"] == "linf" else 0.5
    pair = Pair("apgd", "apgd", {**params, "steps": 20, "early_stop": False}, criterion="interval", epsilons=(eps,))
    (row,) = compare_pair(pair, model, digits_test.subset(64), model_name="lenet")
    assert row["passed"], row  # the cross-check's own two-sided verdict at alpha 0.001
    assert row["robust_acc_native"] <= row["robust_acc_art"] + 0.1, row
    assert 0 < row["robust_acc_art"] < 0.9 or params.get("targeted"), row  # a budget where the attacks differ


def test_apgd_t_pass_matches_art_targeted_dlr(digits_test) -> None:
    """One apgd_t pass is ART's targeted APGD-DLR toward the runner-up class (ART's DLR form differs slightly)."""
    model = trained("lenet", "digits")
    data = digits_test.subset(64)
    x, y, eps = data.x, data.y, 0.06
    native = make_attack("apgd_t", n_target_classes=1, steps=20)(model, x, y, eps, ctx=AttackContext(seed=2))
    with torch.no_grad():
        runner_up = model(x).argsort(1, descending=True)[:, 1]
    options = apgd_to_art(make_attack("apgd", steps=20, loss="dlr", targeted=True), eps)
    art = ArtAttack(attack_class=options[0], options=options[1], target_mode="given")
    x_art = art.generate(model, x, y, eps, target=runner_up, bounds=data.bounds, ctx=AttackContext(seed=2))
    native_robust, art_robust = _robust(model, x, y, native), _robust(model, x, y, x_art)
    _not_weaker_than_art(native_robust, art_robust)
    assert native_robust.sum() < (_robust(model, x, y, x)).sum()


@pytest.mark.slow
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_not_weaker_than_art_on_mnist5k(norm: str, mnist_test) -> None:
    model = trained("lenet", "mnist5k")
    eps = 0.1 if norm == "linf" else 1.0
    params = {"norm": norm, "steps": 100, "early_stop": False}
    pair = Pair(f"apgd_{norm}", "apgd", params, criterion="interval", epsilons=(eps,))
    (row,) = compare_pair(pair, model, mnist_test.subset(400), model_name="lenet")
    print(
        {
            k: row[k]
            for k in ("pair", "eps", "n", "robust_acc_native", "robust_acc_art", "native_seconds", "art_seconds")
        }
    )
    assert row["passed"], row
    assert row["robust_acc_native"] <= row["robust_acc_art"] + 0.05, row
