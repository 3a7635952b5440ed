"""Gradient masking caught and broken: ``lenet_quantized``, the masking flags, and BPDA (``bpda: true``)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from bench.attacks import AttackContext, AttackError, make_attack
from bench.attacks.bpda import InputQuantization, NonDifferentiable, bpda_mode, declared_layers
from bench.crosscheck import suite_pairs
from bench.engine import run_suite, zero_gradient_fraction
from bench.minimal_eps import bisect_minimal_eps
from bench.suite import validate
from reports.flags import sanity_flags
from reports.sources import load_run
from tests.conftest import trained

EPS = 0.2
BPDA_MARGIN = 0.5
"""BPDA-PGD must leave at least this much less robust accuracy than plain PGD on ``lenet_quantized``
(digits, eps 0.2, 200 samples: measured plain PGD 0.92, BPDA-PGD 0.00; FGSM 0.925 and 0.06)."""


@pytest.fixture(scope="module")
def quantized() -> nn.Module:
    """``lenet_quantized`` trained with its zoo recipe on digits (cached like every test model)."""
    return trained("lenet_quantized", "digits")


@pytest.fixture(scope="module")
def digits(digits_test):
    return digits_test.subset(100)


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def test_quantization_rounds_to_levels_and_its_gradient_is_zero() -> None:
    layer = InputQuantization(4)
    x = torch.tensor([0.0, 0.1, 0.17, 0.5, 0.84, 1.0]).view(1, 1, 2, 3).requires_grad_(True)
    out = layer(x)
    assert torch.allclose(out.flatten(), torch.tensor([0.0, 0.0, 1 / 3, 2 / 3, 1.0, 1.0]))
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert bool((grad == 0).all())
    with bpda_mode(layer):  # identity surrogate: gradient one, value unchanged to the bit
        bpda_out = layer(x)
        (grad,) = torch.autograd.grad(bpda_out.sum(), x)
    assert torch.equal(bpda_out, out) and bool((grad == 1).all())
    with pytest.raises(ValueError, match="levels must be an integer >= 2"):
        InputQuantization(1)


def test_quantized_model_masks_every_input_gradient(quantized: nn.Module, digits) -> None:
    assert _accuracy(quantized, digits.x, digits.y) >= 0.85  # a usable model, not a broken one
    assert zero_gradient_fraction(quantized, digits, torch.device("cpu"), 100) == 1.0
    ctx = AttackContext()
    grad, logits = ctx.loss_gradient(quantized, digits.x, digits.y)
    assert bool((grad == 0).all())
    with bpda_mode(quantized) as layers:
        bpda_grad, bpda_logits = ctx.loss_gradient(quantized, digits.x, digits.y)
    assert [type(m) for m in layers] == [InputQuantization]
    assert float((bpda_grad.flatten(1) != 0).any(1).float().mean()) == 1.0
    assert torch.equal(bpda_logits, logits)  # BPDA changes the backward pass only
    # The mode is switched off on leaving the block.
    assert bool((AttackContext().loss_gradient(quantized, digits.x[:10], digits.y[:10])[0] == 0).all())


def test_bpda_pgd_breaks_what_plain_pgd_cannot(quantized: nn.Module, digits) -> None:
    x, y = digits.x, digits.y
    clean = _accuracy(quantized, x, y)
    plain = _accuracy(quantized, make_attack("pgd", steps=10)(quantized, x, y, EPS, ctx=AttackContext(seed=1)), y)
    bpda = _accuracy(
        quantized, make_attack("pgd", steps=10, bpda=True)(quantized, x, y, EPS, ctx=AttackContext(seed=1)), y
    )
    assert plain >= clean - 0.1  # masked: PGD barely moves the model
    assert bpda <= plain - BPDA_MARGIN, (plain, bpda)
    fgsm = make_attack("fgsm")(quantized, x, y, EPS)
    assert torch.equal(fgsm, x)  # sign(0) = 0: plain FGSM returns its input
    fgsm_bpda = _accuracy(quantized, make_attack("fgsm", bpda=True)(quantized, x, y, EPS), y)
    assert fgsm_bpda <= clean - BPDA_MARGIN


def test_bpda_needs_a_declared_layer(lenet_digits: nn.Module, digits) -> None:
    for name in ("pgd", "fgsm", "bim"):
        attack = make_attack(name, bpda=True)
        with pytest.raises(AttackError, match=rf"^{name}: bpda: true needs a model with a declared non-differentiable"):
            attack(lenet_digits, digits.x[:4], digits.y[:4], EPS)
    with pytest.raises(AttackError, match="bpda: true applies to gradient attacks only"):
        make_attack("uniform_noise", bpda=True)
    with pytest.raises(AttackError, match="bpda must be true, false or auto, got 'yes'"):
        make_attack("pgd", bpda="yes")


def test_bpda_auto_is_bpda_where_declared_and_the_plain_attack_elsewhere(
    lenet_digits: nn.Module, quantized: nn.Module, digits
) -> None:
    """``bpda: auto`` lets one suite attack defended and undefended models with the same cell."""
    x, y = digits.x[:40], digits.y[:40]
    for model, same_as in ((lenet_digits, {}), (quantized, {"bpda": True})):
        auto = make_attack("pgd", steps=5, bpda="auto")(model, x, y, EPS, ctx=AttackContext(seed=2))
        reference = make_attack("pgd", steps=5, **same_as)(model, x, y, EPS, ctx=AttackContext(seed=2))
        assert torch.equal(auto, reference)


def test_suite_validation_names_the_bpda_field() -> None:
    base = {"name": "s", "dataset": {"name": "digits", "n": 10}, "models": ["lenet"], "epsilons": [0.1]}
    validate({**base, "attacks": [{"name": "pgd", "params": {"bpda": "auto"}}]})
    with pytest.raises(ValueError, match="bpda"):
        validate({**base, "attacks": [{"name": "pgd", "params": {"bpda": "yes"}}]})


def test_bpda_is_not_part_of_an_attacks_identity_until_set() -> None:
    """Results recorded before the option existed keep their attack_params and repr."""
    plain = make_attack("pgd")
    assert "bpda" not in plain.params() and "bpda" not in repr(plain)
    assert make_attack("pgd", bpda=True).params()["bpda"] is True


class Threshold(NonDifferentiable):
    """A user's own non-differentiable layer: binarize at 0.5; surrogate a steep sigmoid."""

    def forward_exact(self, x: torch.Tensor) -> torch.Tensor:
        return (x > 0.5).to(x.dtype)

    def surrogate(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(10 * (x - 0.5))


def test_a_user_declared_layer_gets_its_surrogate_gradient(lenet_digits: nn.Module, digits) -> None:
    layer = Threshold()
    x = torch.tensor([[[[0.2, 0.5, 0.9]]]], requires_grad=True)
    with bpda_mode(nn.Sequential(layer)):
        out = layer(x)
        (grad,) = torch.autograd.grad(out.sum(), x)
    s = torch.sigmoid(10 * (x.detach() - 0.5))
    assert torch.equal(out, torch.tensor([[[[0.0, 0.0, 1.0]]]]))
    assert torch.allclose(grad, 10 * s * (1 - s))

    model = nn.Sequential(Threshold(), lenet_digits).eval()
    assert declared_layers(model) == [model[0]]
    x, y = digits.x[:50], digits.y[:50]
    plain = _accuracy(model, make_attack("bim", steps=5)(model, x, y, 0.3), y)
    bpda = _accuracy(model, make_attack("bim", steps=5, bpda=True)(model, x, y, 0.3), y)
    assert bpda <= plain - 0.2, (plain, bpda)


def test_bpda_mode_does_not_leak_into_another_thread(quantized: nn.Module, digits) -> None:
    """The threads backend may run a BPDA cell and a plain cell on one model at once."""
    x, y = digits.x[:20], digits.y[:20]
    seen: list[torch.Tensor] = []
    with bpda_mode(quantized):
        worker = threading.Thread(target=lambda: seen.append(AttackContext().loss_gradient(quantized, x, y)[0]))
        worker.start()
        worker.join()
        here = AttackContext().loss_gradient(quantized, x, y)[0]
    assert bool((seen[0] == 0).all()) and bool((here != 0).any())


def test_masking_flags_fire_on_a_real_run_and_name_the_remedy(quantized: nn.Module, tmp_path: Path) -> None:
    suite = validate(
        {
            "name": "bpda-flags",
            "dataset": {"name": "digits", "n": 60},
            "models": ["lenet_quantized"],
            "attacks": [
                "fgsm",
                {"name": "pgd", "params": {"steps": 10}},
                {"name": "pgd", "label": "pgd_bpda", "params": {"steps": 10, "bpda": True}},
                "uniform_noise",
            ],
            "epsilons": [0, 0.2],
            "tracking": {"enabled": False, "examples": 2},
        }
    )
    out = tmp_path / "run"
    run_suite(suite, out=out, track=False, echo=None)
    run = load_run(out)
    flags = sanity_flags(run.results, models=run.models, attacks=run.manifest.get("attacks"))
    codes = {f.code for f in flags}
    assert {"zero-gradients", "gradient-weaker-than-noise"} <= codes
    weaker = {f.subject.split(" vs ")[0].split(" / ")[1] for f in flags if f.code == "gradient-weaker-than-noise"}
    assert weaker == {"fgsm", "pgd"}  # the BPDA cell is not flagged: the remedy works
    robust = run.results.set_index(["attack", "eps"])["robust_accuracy"]
    assert robust["pgd_bpda", 0.2] <= robust["pgd", 0.2] - BPDA_MARGIN

    markdown = (out / "report" / "report.md").read_text()  # the report bench run wrote
    for code in ("zero-gradients", "gradient-weaker-than-noise"):
        lines = [line for line in markdown.splitlines() if f"`{code}`" in line]
        assert lines and all("bpda: true" in line for line in lines), code


def test_minimal_eps_bisection_runs_in_bpda_mode(quantized: nn.Module, digits) -> None:
    """``minimal_eps: true`` bisects with the same BPDA gradients as the sweep (ray and bisect methods)."""
    x, y = digits.x[:30], digits.y[:30]
    for name, params in (("fgsm", {}), ("bim", {"steps": 5})):
        plain = bisect_minimal_eps(make_attack(name, **params), quantized, x, y, max_eps=0.3, iterations=4)
        bpda = bisect_minimal_eps(make_attack(name, bpda=True, **params), quantized, x, y, max_eps=0.3, iterations=4)
        assert np.isfinite(bpda).mean() >= np.isfinite(plain).mean() + 0.5, (name, plain, bpda)


def test_crosscheck_skips_bpda_attacks() -> None:
    """ART has no BPDA mode: a suite's BPDA cell has no ART twin to agree with."""
    suite = validate(
        {
            "name": "s",
            "dataset": {"name": "digits", "n": 10},
            "models": ["lenet"],
            "attacks": ["pgd", {"name": "pgd", "label": "pgd_bpda", "params": {"bpda": "auto"}}],
            "epsilons": [0.1],
        }
    )
    assert [pair.name for pair in suite_pairs(suite.attacks, suite.epsilons_for)] == ["pgd"]
