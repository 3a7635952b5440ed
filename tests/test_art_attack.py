"""The ``art:<ClassName>`` adapter: name resolution, parameter errors, the attack contract, a suite end to end."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from bench.attacks import AttackContext, AttackError, make_attack
from bench.rundir import RESULT_COLUMNS
from bench.suite import SuiteError, validate
from bench.types import Norm


@pytest.mark.parametrize(
    ("name", "params", "norm"),
    [
        ("art:FastGradientMethod", {}, Norm.LINF),
        ("art:FastGradientMethod", {"norm": "l2"}, Norm.L2),
        ("art:ProjectedGradientDescent", {"norm": 2, "max_iter": 5}, Norm.L2),
        ("art:AutoProjectedGradientDescent", {"norm": "inf"}, Norm.LINF),
        ("art:DeepFool", {"max_iter": 5}, Norm.NONE),
        ("art:CarliniLInfMethod", {"max_iter": 5}, Norm.NONE),
        ("art:HopSkipJump", {"max_iter": 1}, Norm.NONE),
    ],
)
def test_norm_is_derived_from_the_art_class_and_its_norm_parameter(name: str, params: dict, norm: Norm) -> None:
    attack = make_attack(name, **params)
    assert attack.norm is norm
    assert attack.bounded == (norm is not Norm.NONE)
    assert repr(attack).startswith(name + "(")


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("art:DeepFol", {}, r"unknown ART evasion attack 'art:DeepFol'; did you mean 'art:DeepFool'"),
        ("art:deepfool", {}, r"did you mean 'art:DeepFool'"),
        ("art:", {}, r"give an ART class after 'art:'"),
        (
            "art:DeepFool",
            {"steps": 3},
            r"no parameter .steps. \(allowed: batch_size, epsilon, max_iter",
        ),
        ("art:FastGradientMethod", {"eps": 0.1}, r"'eps' is set by the harness \(comes from the suite's epsilons\)"),
        ("art:FastGradientMethod", {"estimator": None}, r"'estimator' is set by the harness"),
        ("art:FastGradientMethod", {"norm": 1}, r"norm 1 is not supported by the harness \(allowed: inf, 'linf', 2"),
        ("art:FastGradientMethod", {"num_random_init": -1}, r"ART rejected the parameters: .*random_init"),
        ("art:FastGradientMethod", {"target_mode": "best"}, r"target_mode 'best' is not allowed"),
    ],
)
def test_bad_art_attacks_raise_clear_errors(name: str, params: dict, match: str) -> None:
    with pytest.raises(AttackError, match=match):
        make_attack(name, **params)


def _suite(attacks: list[dict]) -> dict:
    return {
        "name": "art-tiny",
        "dataset": {"name": "digits", "n": 48},
        "models": ["lenet"],
        "attacks": attacks,
        "epsilons": [0, 0.1, 0.2],
        "tracking": {"enabled": False},
    }


def test_suite_validation_names_the_field_of_an_unknown_art_class() -> None:
    with pytest.raises(SuiteError, match=r"x.yaml: attacks\[0\].name: unknown ART evasion attack 'art:DeepFoo'"):
        validate(_suite([{"name": "art:DeepFoo"}]), source="x.yaml")
    with pytest.raises(SuiteError, match=r"x.yaml: attacks\[0\].params: art:DeepFool has no parameter 'eps_step'"):
        validate(_suite([{"name": "art:DeepFool", "params": {"eps_step": 0.1}}]), source="x.yaml")


def test_bounded_art_attack_keeps_the_contract(lenet_digits: torch.nn.Module, digits_test) -> None:
    x, y = digits_test.x[:32], digits_test.y[:32]
    attack = make_attack("art:ProjectedGradientDescent", norm="linf", max_iter=3, eps_step=0.05, num_random_init=1)
    ctx = AttackContext(seed=3)
    out = dict(attack.sweep(lenet_digits, x, y, [0.0, 0.1], bounds=digits_test.bounds, ctx=ctx))
    assert torch.equal(out[0.0], x)
    delta = (out[0.1] - x).abs().amax(dim=(1, 2, 3))
    assert float(delta.max()) <= 0.1 + 1e-6
    assert float(out[0.1].min()) >= 0.0 and float(out[0.1].max()) <= 1.0
    assert ctx.grad_evals == 3 * 32  # counted through the classifier wrapper
    # Seeded from the context, and NumPy's global generator is left as it was.
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    again = attack(lenet_digits, x, y, 0.1, bounds=digits_test.bounds, ctx=AttackContext(seed=3))
    assert np.array_equal(np.random.get_state()[1], before)
    assert torch.equal(again, out[0.1])
    other = attack(lenet_digits, x, y, 0.1, bounds=digits_test.bounds, ctx=AttackContext(seed=4))
    assert not torch.equal(other, out[0.1])


def test_art_attack_passes_true_labels_not_predictions(lenet_digits: torch.nn.Module, digits_test) -> None:
    """With y omitted ART would attack the predicted labels; on misclassified samples that differs."""
    x, y = digits_test.x, digits_test.y
    wrong = lenet_digits(x).argmax(1) != y
    assert wrong.any()
    native = make_attack("fgsm")(lenet_digits, x[wrong], y[wrong], 0.05)
    art = make_attack("art:FastGradientMethod")(lenet_digits, x[wrong], y[wrong], 0.05)
    assert float((native - art).abs().max()) <= 1e-6


def test_art_attacks_in_a_suite_give_the_native_results_schema(tmp_path, lenet_digits) -> None:
    from bench.engine import run_suite

    suite = validate(
        _suite(
            [
                {"name": "fgsm", "label": "fgsm_native"},
                {"name": "art:FastGradientMethod", "label": "fgm_art"},
                {"name": "fgsm", "label": "fgsm_ll", "params": {"targeted": True, "target_mode": "least_likely"}},
                {
                    "name": "art:FastGradientMethod",
                    "label": "fgm_art_ll",
                    "params": {"targeted": True, "target_mode": "least_likely"},
                },
                {"name": "art:DeepFool", "params": {"max_iter": 20}},
            ]
        )
    )
    outcome = run_suite(suite, out=tmp_path / "run", echo=None)
    results = pd.read_csv(tmp_path / "run" / "results.csv")
    assert list(results.columns) == RESULT_COLUMNS
    by = {a: rows.sort_values("eps").reset_index(drop=True) for a, rows in results.groupby("attack")}
    for native, art in (("fgsm_native", "fgm_art"), ("fgsm_ll", "fgm_art_ll")):
        np.testing.assert_array_equal(by[native]["robust_accuracy"], by[art]["robust_accuracy"])
        np.testing.assert_allclose(by[native]["mean_linf"], by[art]["mean_linf"], atol=1e-6)
    assert bool(by["fgm_art_ll"]["targeted"].all())
    deepfool = by["art:DeepFool"]
    assert (deepfool["norm"] == "none").all()
    # Unbounded: one run reported at every eps; DeepFool fools nearly every clean-correct sample.
    assert deepfool["robust_accuracy"].nunique() == 1
    assert float(deepfool["robust_accuracy"].iloc[0]) < 0.2 * float(deepfool["clean_accuracy"].iloc[0])
    assert float(deepfool["mean_l2"].iloc[0]) > 0
    assert int(deepfool["grad_evals"].sum()) > 0
    assert outcome.results["attack"].nunique() == 5
