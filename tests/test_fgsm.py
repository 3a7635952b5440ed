"""FGSM's contract on a trained model (the full matrix over every attack lives in test_attack_contract.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch

from bench.attacks import AttackContext, AttackError, make_attack, project
from bench.attacks.base import Attack, Ray
from bench.attacks.fgsm import FGSM
from bench.types import Bounds, Norm

EPS = [0.0, 0.05, 0.1, 0.2, 0.3]


@pytest.fixture(scope="module")
def batch(digits_test):
    return digits_test.x[:128], digits_test.y[:128]


def _accuracy(model, x, y) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def test_bounds_budget_and_identity(lenet_digits, batch) -> None:
    x, y = batch
    attack = FGSM()
    for eps, x_adv in attack.sweep(lenet_digits, x, y, EPS):
        assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
        assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
        assert float((x_adv - x).abs().max()) <= eps + 1e-6
        if eps == 0:
            assert torch.equal(x_adv, x)


def test_sweep_equals_per_eps_calls_exactly(lenet_digits, batch) -> None:
    x, y = batch
    attack = FGSM()
    swept = dict(attack.sweep(lenet_digits, x, y, EPS))
    for eps in EPS:
        assert torch.equal(swept[eps], attack(lenet_digits, x, y, eps))


def test_sweep_costs_one_gradient_per_sample(lenet_digits, batch) -> None:
    x, y = batch
    ctx = AttackContext()
    list(FGSM().sweep(lenet_digits, x, y, EPS, ctx=ctx))
    assert ctx.grad_evals == len(x)


def test_robust_accuracy_does_not_exceed_clean_and_drops(lenet_digits, batch) -> None:
    x, y = batch
    clean = _accuracy(lenet_digits, x, y)
    accs = [_accuracy(lenet_digits, x_adv, y) for _, x_adv in FGSM().sweep(lenet_digits, x, y, EPS)]
    assert accs[0] == clean
    assert all(a <= clean for a in accs)
    assert accs[-1] < clean - 0.3  # a real attack, not the identity


def test_fgsm_moves_every_nonzero_gradient_pixel_by_eps(lenet_digits, batch) -> None:
    """Linf FGSM is x + eps * sign(grad) clipped: check the step against an independent autograd gradient."""
    x, y = batch
    eps = 0.1
    xg = x.clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(lenet_digits(xg), y, reduction="sum").backward()
    expected = (x + eps * xg.grad.sign()).clamp(0, 1)
    assert torch.allclose(FGSM()(lenet_digits, x, y, eps), expected, atol=1e-7)


def test_l2_step_has_norm_eps_before_clipping(lenet_digits, batch) -> None:
    x, y = batch
    x_mid = x.clamp(0.2, 0.8)  # away from the bounds so clipping does not shorten the step
    # eps 0.15 < 0.2: no single pixel can move far enough to be clipped
    x_adv = FGSM(norm="l2")(lenet_digits, x_mid, y, 0.15)
    norms = (x_adv - x_mid).flatten(1).norm(dim=1)
    assert torch.allclose(norms, torch.full_like(norms, 0.15), atol=1e-5)


def test_base_class_reprojects_whatever_the_attack_returns() -> None:
    x = torch.rand(4, 1, 8, 8)
    wild = x + 5 * torch.randn_like(x)
    for norm, eps in ((Norm.LINF, 0.1), (Norm.L2, 0.5)):
        out = project(wild, x, eps, norm, Bounds())
        assert float(out.min()) >= 0 and float(out.max()) <= 1
        if norm is Norm.LINF:
            assert float((out - x).abs().max()) <= eps + 1e-6
        else:
            assert float((out - x).flatten(1).norm(dim=1).max()) <= eps + 1e-5


@dataclass(frozen=True, kw_only=True)
class _WildRay(Attack):
    """A ray attack whose direction is whatever the test puts in ``scale`` times a fixed pattern."""

    name: ClassVar[str] = "wild_ray"
    ray: ClassVar[bool] = True
    norm: Norm = Norm.LINF
    scale: float = 5.0
    shape_ok: bool = True

    @classmethod
    def allowed_norms(cls) -> tuple[Norm, ...]:
        return (Norm.LINF, Norm.L2)

    def run(self, model, x, y, eps, *, target, bounds, ctx):
        gen = torch.Generator().manual_seed(0)
        d = self.scale * torch.randn(x.shape, generator=gen)
        return Ray(d if self.shape_ok else d[:, :, :-1])


def test_ray_attacks_get_their_direction_checked_and_projected_once() -> None:
    """The base projects a ray's direction onto the unit ball, so every eps stays in its ball and bounds."""
    x = torch.rand(6, 1, 8, 8)
    y = torch.zeros(6, dtype=torch.long)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
    for norm, grid in ((Norm.LINF, (0.0, 0.1, 0.3)), (Norm.L2, (0.0, 0.5, 2.0))):
        for eps, out in _WildRay(norm=norm).sweep(model, x, y, grid):
            assert float(out.min()) >= 0 and float(out.max()) <= 1
            size = (out - x).flatten(1).abs().amax(1) if norm is Norm.LINF else (out - x).flatten(1).norm(dim=1)
            assert float(size.max()) <= eps * (1 + 1e-6) + 1e-7
            if eps == 0:
                assert torch.equal(out, x)
        # a direction scaled by 5 reaches the sphere: the projection keeps it there, not at 0
        assert float(size.max()) > 0.5 * grid[-1]
    with pytest.raises(AttackError, match="NaN or infinite"):
        _WildRay(scale=float("nan"))(model, x, y, 0.1)
    with pytest.raises(AttackError, match=r"direction of shape \(6, 1, 7, 8\), expected \(6, 1, 8, 8\)"):
        _WildRay(shape_ok=False)(model, x, y, 0.1)


def test_targeted_modes(lenet_digits, batch) -> None:
    x, y = batch
    ctx = AttackContext(seed=3)
    random_targets = FGSM(targeted=True).targets(lenet_digits, x, y, target=None, ctx=ctx)
    assert bool((random_targets != y).all())
    again = FGSM(targeted=True).targets(lenet_digits, x, y, target=None, ctx=AttackContext(seed=3))
    assert torch.equal(random_targets, again)
    ll = FGSM(targeted=True, target_mode="least_likely").targets(lenet_digits, x, y, target=None, ctx=AttackContext())
    with torch.no_grad():
        assert torch.equal(ll, lenet_digits(x).argmin(1))
    with pytest.raises(AttackError, match="target class 12 does not exist"):
        FGSM(targeted=True)(lenet_digits, x, y, 0.1, target=torch.full_like(y, 12))
    with pytest.raises(AttackError, match="needs explicit target classes"):
        FGSM(targeted=True, target_mode="given")(lenet_digits, x, y, 0.1)


def test_parameter_errors_name_allowed_values() -> None:
    with pytest.raises(AttackError, match=r"norm 'l0' is not supported here \(allowed: linf, l2\)"):
        FGSM(norm="l0")
    with pytest.raises(AttackError, match=r"unknown norm 'l3'"):
        FGSM(norm="l3")
    with pytest.raises(AttackError, match=r"has no parameter 'steps' \(allowed: bpda, norm, target_mode, targeted\)"):
        make_attack("fgsm", steps=3)
    with pytest.raises(AttackError, match="target_mode 'sometimes'"):
        make_attack("fgsm", target_mode="sometimes")
    with pytest.raises(TypeError):
        FGSM("linf")  # keyword-only hyperparameters
    assert repr(FGSM(norm="l2")) == "fgsm(norm='l2', targeted=False, target_mode='random')"
