"""The attack contract, checked on every registered attack (DESIGN.md, convention 3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.attacks import ATTACKS, AttackContext, make_attack, perturbation_norms
from bench.engine import evaluate_cell, tidy
from bench.types import Norm

# One budget per norm, in the norm's own units (pixels of [0, 1]; l0: fraction of pixels; patch: side).
EPS = {Norm.LINF: 0.1, Norm.L2: 1.0, Norm.L0: 0.1, Norm.PATCH: 3.0, Norm.NONE: 0.0}
GRID = {
    Norm.LINF: (0.0, 0.05, 0.1, 0.2),
    Norm.L2: (0.0, 0.5, 1.0, 2.0),
    Norm.L0: (0.0, 0.05, 0.1),
    Norm.PATCH: (0.0, 2.0, 4.0),
    Norm.NONE: (0.0, 0.1),
}
NAMES = ATTACKS.names()
CHEAP: dict[str, dict[str, object]] = {
    "apgd": {"steps": 20},
    "apgd_t": {"steps": 10, "n_target_classes": 3},
    "square": {"max_iter": 100},
    "reliable": {
        "member_params": {
            "apgd": {"steps": 10},
            "apgd_t": {"steps": 10, "n_target_classes": 2},
            "square": {"max_iter": 100},
        }
    },
}
"""Smaller budgets for the attacks whose defaults cost minutes here (the contract holds at any budget;
their defaults are exercised by their own tests)."""


def _attack(name: str):  # type: ignore[no-untyped-def]
    return make_attack(name, **CHEAP.get(name, {}))


@pytest.fixture(scope="module")
def batch(digits_test):
    return digits_test.x[:24], digits_test.y[:24]


def _run(name, model, x, y, eps, seed=0):
    attack = _attack(name)
    ctx = AttackContext(seed=seed)
    return attack, attack(model, x, y, eps, ctx=ctx), ctx


def patch_side(x_adv: torch.Tensor, x: torch.Tensor) -> np.ndarray:
    """Per sample, the side of the smallest square-or-rectangle box holding every changed pixel (0 if none)."""
    changed = (x_adv - x).abs().amax(dim=1) > 0
    sides = []
    for mask in changed:
        rows, cols = mask.any(1).nonzero(), mask.any(0).nonzero()
        sides.append(
            0 if rows.numel() == 0 else max(int(rows.max() - rows.min()) + 1, int(cols.max() - cols.min()) + 1)
        )
    return np.asarray(sides)


def test_every_issue_attack_is_registered():
    expected = {
        "fgsm", "bim", "pgd", "fooling_images", "targeted_ascent", "adversarial_noise",
        "uniform_noise", "gaussian_noise", "salt_pepper", "occlusion",
    }  # fmt: skip
    assert expected <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_shape_dtype_bounds_and_budget(name, lenet_digits, batch):
    x, y = batch
    attack = _attack(name)
    eps = EPS[attack.norm]
    _, x_adv, ctx = _run(name, lenet_digits, x, y, eps)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    norms = perturbation_norms(x_adv, x)
    if attack.norm in (Norm.LINF, Norm.L2):
        assert float(norms[attack.norm.value].max()) <= eps + 1e-5
    elif attack.norm is Norm.L0:
        assert float(norms["l0"].max()) <= eps + 1e-9
    elif attack.norm is Norm.PATCH:
        assert patch_side(x_adv, x).max() <= eps
    # Every attack changes something on a trained model at these budgets.
    assert float(norms["linf"].max()) > 0
    if attack.uses_gradients:
        assert ctx.grad_evals > 0
    else:
        assert ctx.grad_evals == 0 and ctx.forward_evals > 0


@pytest.mark.parametrize("name", [n for n in NAMES if make_attack(n).bounded])
def test_zero_eps_is_identity(name, lenet_digits, batch):
    x, y = batch
    _, x_adv, _ = _run(name, lenet_digits, x, y, 0.0)
    assert torch.equal(x_adv, x)


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_output(name, lenet_digits, batch):
    x, y = batch
    eps = EPS[_attack(name).norm]
    _, first, _ = _run(name, lenet_digits, x, y, eps, seed=7)
    _, second, _ = _run(name, lenet_digits, x, y, eps, seed=7)
    assert torch.equal(first, second)


@pytest.mark.parametrize("name", NAMES)
def test_robust_accuracy_never_exceeds_clean_and_never_rises(name, lenet_digits, digits_test):
    data = digits_test.subset(48)
    attack = _attack(name)
    grid = GRID[attack.norm]
    arrays, _ = evaluate_cell(lenet_digits, attack, data, grid, seed=1, device=torch.device("cpu"), batch_size=32)
    meta = dict(suite="t", dataset="digits", split="test", model="lenet", attack=name, attack_name=name,
                attack_params="{}", norm=attack.norm.value, targeted=attack.targeted, seed=0, device="cpu")  # fmt: skip
    rows, samples = tidy(arrays, data=data, epsilons=grid, attack=attack, meta=meta)
    acc = rows["robust_accuracy"].to_numpy()
    assert (acc <= rows["clean_accuracy"].to_numpy() + 1e-12).all()
    assert (np.diff(acc) <= 1e-12).all()
    # The pointwise flags come from the attack's own outputs: robust needs correct at every smaller eps.
    assert (rows["robust_accuracy"] <= rows["robust_accuracy_pointwise"] + 1e-12).all()
    assert len(samples) == len(grid) * len(data)
