"""The clean input's logits are computed once per batch: shared by the clean pass, eps-0 scoring and,
where the model's logits under autograd are exact, the first gradient at the clean input."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from bench.api import evaluate
from bench.attacks import AttackContext, make_attack
from bench.engine import evaluate_cell, gradient_logits_exact
from bench.types import Bounds

EPS = (0.0, 0.05, 0.1, 0.2)


class Counting(nn.Module):
    """Wraps a model and counts its calls, apart by grad mode (``grad``: calls that record a graph)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.calls = {"grad": 0, "no_grad": 0}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls["grad" if torch.is_grad_enabled() and x.requires_grad else "no_grad"] += 1
        return self.inner(x)


class GradModeLiar(nn.Module):
    """Different predictions under autograd: the class scores shift by one place (a model that branches on mode)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.inner(x)
        return logits.roll(1, dims=1) if torch.is_grad_enabled() else logits


def _batch(digits_test, n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    return digits_test.x[:n], digits_test.y[:n]


def test_the_context_computes_the_clean_logits_once(lenet_digits, digits_test) -> None:
    model = Counting(lenet_digits)
    x, _ = _batch(digits_test)
    ctx = AttackContext()
    ctx.track_clean(x)
    first = ctx.logits(model, x)
    first[:, 0] = 1e9  # a caller writing into its logits must not change what the next one gets
    again = ctx.logits(model, x.detach())  # a detached view of the same memory is the same input
    again[:, 1] = -1e9  # nor one writing into what came from memory
    third = ctx.logits(model, x)
    assert model.calls["no_grad"] == 1 and ctx.forward_evals == len(x)
    with torch.no_grad():
        assert torch.equal(third, lenet_digits(x))

    ctx.logits(model, x.clone())  # equal values elsewhere: not the tracked input
    ctx.logits(Counting(lenet_digits), x)  # another model
    assert model.calls["no_grad"] == 2
    y = x.clone()
    ctx.track_clean(y)
    ctx.logits(model, y)
    y.add_(0.0)  # written in place (same values, but the context cannot know): computed again
    ctx.logits(model, y)
    assert model.calls["no_grad"] == 4


@pytest.mark.parametrize("attack", ["fgsm", "pgd", "gaussian_noise"])
def test_a_sweep_yields_the_clean_input_itself_at_eps_0(attack, lenet_digits, digits_test) -> None:
    x, y = _batch(digits_test)
    the_attack = make_attack(attack, **({"steps": 3} if attack == "pgd" else {}))
    outs = list(the_attack.sweep(lenet_digits, x, y, [0.0, 0.1], ctx=AttackContext()))
    assert outs[0][1].data_ptr() == x.data_ptr() and torch.equal(outs[0][1], x)
    assert outs[1][1].data_ptr() != x.data_ptr()

    # Outside the bounds the eps-0 example is the clipped input, a new tensor (as before).
    wide = x * 2.0 - 0.5
    outs = list(the_attack.sweep(lenet_digits, wide, y, [0.0, 0.1], ctx=AttackContext()))
    assert outs[0][1].data_ptr() != wide.data_ptr() and torch.equal(outs[0][1], wide.clamp(0.0, 1.0))


def test_a_broken_attack_still_fails_at_eps_0(lenet_digits, digits_test) -> None:
    """Yielding the input at eps 0 must not hide an attack that returned NaN there."""
    from bench.attacks.pgd import PGD

    class Broken(PGD):
        def run_sweep(self, model, x, y, eps_list, *, target, bounds, ctx):
            for eps in eps_list:
                yield eps, torch.full_like(x, float("nan"))

    x, y = _batch(digits_test)
    with pytest.raises(ValueError, match="NaN"):
        list(Broken(steps=2).sweep(lenet_digits, x, y, [0.0], ctx=AttackContext()))


@pytest.mark.parametrize("gradient_logits", [True, False])
def test_an_fgsm_cell_makes_one_gradient_and_one_forward_per_moved_eps(
    gradient_logits, lenet_digits, digits_test
) -> None:
    model = Counting(lenet_digits)
    data = digits_test.subset(64)
    arrays, _ = evaluate_cell(
        model,
        make_attack("fgsm"),
        data,
        EPS,
        seed=0,
        device=torch.device("cpu"),
        batch_size=64,
        gradient_logits=gradient_logits,
    )
    # One gradient; a forward per eps > 0; eps 0 and the clean predictions share one forward,
    # or none when the gradient's own logits may stand for it.
    assert model.calls == {"grad": 1, "no_grad": len(EPS) - 1 + (0 if gradient_logits else 1)}
    with torch.no_grad():
        clean = lenet_digits(data.x).argmax(1).numpy()
    assert np.array_equal(arrays["clean_pred"], clean)
    assert np.array_equal(arrays["adv_pred"][0], clean)
    assert not arrays["linf"][0].any() and not arrays["l2"][0].any()
    assert np.allclose(arrays["linf"][1], 0.05, atol=1e-6)


def test_gradient_logits_exact_for_plain_layers_and_not_for_a_model_that_branches(lenet_digits, digits_test) -> None:
    x, _ = _batch(digits_test)
    with torch.no_grad():
        assert gradient_logits_exact(lenet_digits, x, lenet_digits(x))
        liar = GradModeLiar(lenet_digits)
        assert not gradient_logits_exact(liar, x, liar(x))


def test_clean_accuracy_never_comes_from_logits_under_autograd_unless_they_are_exact(lenet_digits, digits_test) -> None:
    """A model whose predictions change under autograd: eps 0 and the clean accuracy are its inference ones."""
    liar = GradModeLiar(lenet_digits)
    x, y = digits_test.x[:200], digits_test.y[:200]
    table = evaluate(liar, x, y, attack="fgsm", epsilons=[0.0, 0.1], batch_size=100)
    with torch.no_grad():
        expected = float((lenet_digits(x).argmax(1) == y).float().mean())
    assert table["clean_accuracy"].iloc[0] == pytest.approx(expected)
    assert table["robust_accuracy"].iloc[0] == pytest.approx(expected)
    assert expected > 0.5  # the shifted predictions would be near 0.1


def test_a_run_records_the_check_and_scores_eps_0_as_the_clean_pass(
    report_run: Path, lenet_digits, digits_test
) -> None:
    info = json.loads((report_run / "models.json").read_text())
    assert {m["gradient_logits_exact"] for m in info.values()} == {True}
    results = pd.read_csv(report_run / "results.csv")
    at_zero = results[results["eps"] == 0]
    assert len(at_zero) == 4
    assert np.allclose(at_zero["robust_accuracy"], at_zero["clean_accuracy"])
    samples = pd.read_parquet(report_run / "samples.parquet")
    zero = samples[samples["eps"] == 0]
    assert (zero["adv_pred"] == zero["clean_pred"]).all() and (zero["linf"] == 0).all()
    # The shared pass gives the model's real predictions: an inference pass of its own, sample by sample
    # (FGSM takes them from its gradient's logits, the targeted cell from its target choice's forward).
    for attack in ("fgsm", "fgsm_t"):
        cell = zero[(zero["model"] == "lenet") & (zero["attack"] == attack)]
        with torch.no_grad():
            expected = lenet_digits(digits_test.x[torch.from_numpy(cell["index"].to_numpy().copy())]).argmax(1).numpy()
        assert len(cell) == 120 and np.array_equal(cell["clean_pred"].to_numpy(), expected)


def test_bounds_of_the_within_check_are_closed(lenet_digits) -> None:
    """Values exactly at the bounds are inside: the input itself is yielded."""
    x = torch.zeros(4, 1, 8, 8)
    x[:, :, :4] = 1.0
    y = torch.zeros(4, dtype=torch.long)
    ((_, out),) = list(make_attack("fgsm").sweep(lenet_digits, x, y, [0.0], bounds=Bounds(0.0, 1.0)))
    assert out.data_ptr() == x.data_ptr()


def test_an_attack_that_writes_into_its_input_is_refused(lenet_digits, digits_test) -> None:
    """The clean pass follows the sweep, so an input written in place would give wrong clean predictions."""
    from bench.attacks.noise import GaussianNoise
    from bench.rundir import RunError

    class Scribbler(GaussianNoise):
        def run(self, model, x, y, eps, *, target, bounds, ctx):
            x.mul_(0.5)
            return x

    data = digits_test.subset(16)
    data = dataclasses.replace(data, x=data.x.clone())  # the session's data set must stay unwritten
    with pytest.raises(RunError, match="wrote into its input"):
        evaluate_cell(lenet_digits, Scribbler(), data, EPS, seed=0, device=torch.device("cpu"), batch_size=16)
    assert not torch.equal(data.x, digits_test.x[:16])  # it did write: the error is not a false alarm


def test_inference_mode_inputs_are_attacked_without_remembering(lenet_digits, digits_test) -> None:
    with torch.inference_mode():
        x = digits_test.x[:16].clone()
    ctx = AttackContext()
    outs = list(make_attack("gaussian_noise").sweep(lenet_digits, x, digits_test.y[:16], [0.0, 0.1], ctx=ctx))
    assert torch.equal(outs[0][1], x)
    model = Counting(lenet_digits)
    ctx.logits(model, x)
    ctx.logits(model, x)
    assert model.calls["no_grad"] == 2


def test_evaluate_takes_inference_mode_inputs_for_gradient_free_attacks(lenet_digits, digits_test) -> None:
    with torch.inference_mode():
        x = digits_test.x[:64].clone()
    table = evaluate(lenet_digits, x, digits_test.y[:64], attack="gaussian_noise", epsilons=[0.0, 0.1])
    with torch.no_grad():
        expected = float((lenet_digits(digits_test.x[:64]).argmax(1) == digits_test.y[:64]).float().mean())
    assert table["robust_accuracy"].iloc[0] == pytest.approx(expected)


def test_a_forward_leaving_torch_is_not_exact_and_runs_gradient_free_attacks(lenet_digits, digits_test) -> None:
    """The check never fails a model it cannot run under autograd: gradient-free attacks still evaluate it."""

    class ThroughNumpy(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(lenet_digits(torch.from_numpy(x.numpy().copy())).detach().numpy())

    x, y = digits_test.x[:32], digits_test.y[:32]
    assert not gradient_logits_exact(ThroughNumpy(), x)
    table = evaluate(ThroughNumpy(), x, y, attack="gaussian_noise", epsilons=[0.0, 0.1])
    assert table["clean_accuracy"].iloc[0] == table["robust_accuracy"].iloc[0] > 0.5
