"""FGSM (l2, targeted), BIM and PGD on trained models: strength orderings, sweep-awareness, ART's update."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bench.attacks import AttackContext, AttackError, make_attack, perturbation_norms
from bench.attacks.base import resolve_targets
from bench.types import Norm

EPSILONS = (0.05, 0.1, 0.15, 0.2)


@pytest.fixture(scope="module")
def mnist_batch(mnist_test):
    return mnist_test.x[:150], mnist_test.y[:150]


def accuracy(model, x_adv, y) -> float:
    with torch.no_grad():
        return float((model(x_adv).argmax(1) == y).float().mean())


def hits(model, x_adv, target) -> float:
    with torch.no_grad():
        return float((model(x_adv).argmax(1) == target).float().mean())


def test_pgd_and_bim_beat_fgsm_at_every_eps(lenet_mnist, mnist_batch):
    x, y = mnist_batch
    for eps in (0.1, 0.2):
        fgsm = accuracy(lenet_mnist, make_attack("fgsm")(lenet_mnist, x, y, eps), y)
        bim = accuracy(lenet_mnist, make_attack("bim")(lenet_mnist, x, y, eps), y)
        pgd = accuracy(lenet_mnist, make_attack("pgd", steps=20)(lenet_mnist, x, y, eps), y)
        assert pgd <= fgsm and bim <= fgsm
        assert pgd < accuracy(lenet_mnist, x, y)


def test_targeted_pgd_reaches_targets_at_least_as_often_as_targeted_fgsm(lenet_mnist, mnist_batch):
    x, y = mnist_batch
    target = (y + 1 + torch.arange(len(y)) % 9) % 10  # every other class, never the label
    for eps in (0.1, 0.2):
        fgsm = make_attack("fgsm", targeted=True, target_mode="given")(lenet_mnist, x, y, eps, target=target)
        pgd = make_attack("pgd", targeted=True, target_mode="given", steps=20)(lenet_mnist, x, y, eps, target=target)
        assert hits(lenet_mnist, pgd, target) >= hits(lenet_mnist, fgsm, target)
    # At eps 0.2 the iterative attack is strictly better, and reaches a real share of the targets.
    assert hits(lenet_mnist, pgd, target) > hits(lenet_mnist, fgsm, target)
    assert hits(lenet_mnist, pgd, target) > 0.3


def test_sweep_aware_pgd_is_never_weaker_and_cheaper(lenet_mnist, mnist_batch):
    x, y = mnist_batch
    attack = make_attack("pgd", steps=20)
    sweep_ctx = AttackContext(seed=5)
    swept = dict(attack.sweep(lenet_mnist, x, y, EPSILONS, ctx=sweep_ctx))
    per_eps_grads = 0
    for eps in EPSILONS:
        ctx = AttackContext(seed=5)
        alone = attack(lenet_mnist, x, y, eps, ctx=ctx)
        per_eps_grads += ctx.grad_evals
        assert accuracy(lenet_mnist, swept[eps], y) <= accuracy(lenet_mnist, alone, y)
    assert sweep_ctx.grad_evals < per_eps_grads
    # A sample fooled at a smaller eps keeps its example at every larger eps.
    fooled_before = torch.zeros(len(y), dtype=torch.bool)
    for eps in EPSILONS:
        with torch.no_grad():
            fooled = lenet_mnist(swept[eps]).argmax(1) != y
        assert bool(fooled[fooled_before].all())
        fooled_before |= fooled


def test_early_stop_spends_fewer_gradients_and_keeps_strength(lenet_mnist, mnist_batch):
    x, y = mnist_batch
    eager, full = AttackContext(seed=1), AttackContext(seed=1)
    stopped = make_attack("bim")(lenet_mnist, x, y, 0.15, ctx=eager)
    complete = make_attack("bim", early_stop=False)(lenet_mnist, x, y, 0.15, ctx=full)
    assert full.grad_evals == 10 * len(y)
    assert eager.grad_evals < full.grad_evals
    assert accuracy(lenet_mnist, stopped, y) <= accuracy(lenet_mnist, complete, y)


def test_restarts_never_weaker(lenet_mnist, mnist_batch):
    x, y = mnist_batch
    one = make_attack("pgd", steps=5)(lenet_mnist, x, y, 0.1, ctx=AttackContext(seed=2))
    three = make_attack("pgd", steps=5, restarts=3)(lenet_mnist, x, y, 0.1, ctx=AttackContext(seed=2))
    assert accuracy(lenet_mnist, three, y) <= accuracy(lenet_mnist, one, y)


def _art_classifier(model, x):
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(
        model=model,
        loss=torch.nn.CrossEntropyLoss(reduction="sum"),
        input_shape=tuple(x.shape[1:]),
        nb_classes=10,
        clip_values=(0.0, 1.0),
    )


@pytest.mark.parametrize(
    ("name", "norm", "eps", "targeted"),
    [("bim", "linf", 0.1, False), ("pgd", "l2", 1.0, False), ("pgd", "linf", 0.1, True)],
)
def test_no_early_stop_path_matches_art(name, norm, eps, targeted, lenet_digits, digits_test):
    from art.attacks.evasion import ProjectedGradientDescent

    x, y = digits_test.x[:32], digits_test.y[:32]
    target = (y + 3) % 10
    ours = make_attack(
        name, norm=norm, targeted=targeted, target_mode="given", steps=7, step_size=eps / 4,
        random_start=False, early_stop=False,
    )  # fmt: skip
    x_ours = ours(lenet_digits, x, y, eps, target=target if targeted else None)
    art = ProjectedGradientDescent(
        _art_classifier(lenet_digits, x), norm=np.inf if norm == "linf" else 2, eps=eps, eps_step=eps / 4,
        max_iter=7, targeted=targeted, num_random_init=0, batch_size=64, verbose=False,
    )  # fmt: skip
    labels = (target if targeted else y).numpy()
    x_art = art.generate(x.numpy(), y=np.eye(10, dtype=np.float32)[labels])
    assert np.abs(x_ours.numpy() - x_art).max() <= 1e-5


def test_fgsm_l2_moves_eps_along_the_normalised_gradient(lenet_mnist, mnist_batch):
    x, y = mnist_batch
    # Mid-grey inputs keep the step inside the bounds, so nothing is clipped.
    x = 0.5 + 0.05 * (x - 0.5)
    eps = 0.5
    ctx = AttackContext()
    x_adv = make_attack("fgsm", norm="l2")(lenet_mnist, x, y, eps)
    grad, _ = ctx.loss_gradient(lenet_mnist, x, y)
    delta = (x_adv - x).reshape(len(x), -1)
    torch.testing.assert_close(delta.norm(dim=1), torch.full((len(x),), eps), atol=1e-5, rtol=0)
    cosine = F.cosine_similarity(delta, grad.reshape(len(x), -1), dim=1)
    assert float(cosine.min()) > 0.9999
    assert float(perturbation_norms(x_adv, x)["linf"].max()) < eps


def test_fgsm_target_modes(lenet_mnist, mnist_batch):
    x, y = mnist_batch
    with torch.no_grad():
        logits = lenet_mnist(x)
    least = make_attack("fgsm", targeted=True, target_mode="least_likely")
    assert torch.equal(least.targets(lenet_mnist, x, y, target=None, ctx=AttackContext()), logits.argmin(1))
    rand = make_attack("fgsm", targeted=True)
    first = rand.targets(lenet_mnist, x, y, target=None, ctx=AttackContext(seed=1))
    again = rand.targets(lenet_mnist, x, y, target=None, ctx=AttackContext(seed=1))
    other = rand.targets(lenet_mnist, x, y, target=None, ctx=AttackContext(seed=2))
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert bool((first != y).all()) and len(first.unique()) == 10
    with pytest.raises(AttackError, match="target class 12 does not exist"):
        resolve_targets(logits, y, "given", given=torch.full_like(y, 12), ctx=AttackContext())
    with pytest.raises(AttackError, match="needs explicit target classes"):
        make_attack("fgsm", targeted=True, target_mode="given")(lenet_mnist, x, y, 0.1)


def test_targeted_fgsm_descends_the_target_loss(lenet_mnist, mnist_batch):
    x, y = mnist_batch
    target = (y + 5) % 10
    x_adv = make_attack("fgsm", targeted=True, target_mode="given")(lenet_mnist, x, y, 0.1, target=target)
    with torch.no_grad():
        before = F.cross_entropy(lenet_mnist(x), target, reduction="none")
        after = F.cross_entropy(lenet_mnist(x_adv), target, reduction="none")
    assert float((after < before).float().mean()) > 0.9
    untargeted = make_attack("fgsm")(lenet_mnist, x, y, 0.1)
    assert hits(lenet_mnist, x_adv, target) > hits(lenet_mnist, untargeted, target)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"steps": 0}, "steps must be an integer >= 1"),
        ({"restarts": 2, "random_start": False}, "restarts > 1 needs random_start"),
        ({"step_size": -0.1}, "step_size must be a finite number > 0"),
        ({"rel_step_size": 0}, "rel_step_size must be a finite number > 0"),
        ({"norm": "l0"}, r"norm 'l0' is not supported here \(allowed: linf, l2\)"),
        ({"target_mode": "nearest"}, r"target_mode 'nearest' is not allowed \(allowed: random, least_likely, given\)"),
        ({"stepz": 3}, r"has no parameter 'stepz' \(allowed: bpda, early_stop, norm, random_start"),
    ],
)
@pytest.mark.parametrize("name", ["bim", "pgd"])
def test_bad_parameters_are_named(name, params, message):
    with pytest.raises(AttackError, match=message):
        make_attack(name, **params)


def test_norm_enum_round_trips():
    assert make_attack("pgd", norm="l2").norm is Norm.L2
    assert make_attack("bim").params()["norm"] == "linf"
