"""Fooling images, targeted ascent with an MSE prior, and learned additive noise on trained models."""

from __future__ import annotations

import pytest
import torch

from bench.attacks import AttackContext, AttackError, make_attack, perturbation_norms


@pytest.fixture(scope="module")
def mnist_batch(mnist_test):
    return mnist_test.x[:60], mnist_test.y[:60]


def test_fooling_images_reach_confidence_for_nine_of_ten_classes(lenet_mnist, mnist_test):
    classes = torch.arange(10)
    x, y = mnist_test.x[:10], mnist_test.y[:10]
    attack = make_attack("fooling_images", target_mode="given")
    ctx = AttackContext(seed=0)
    sweep = attack.sweep(lenet_mnist, x, y, [0.0], target=classes, ctx=ctx)
    ((_, images),) = list(sweep)
    with torch.no_grad():
        probs = lenet_mnist(images).softmax(1)[classes, classes]
    reached = probs >= 0.99
    assert int(reached.sum()) >= 9
    per_class = sweep.extras["per_class"]
    assert sorted(per_class) == [str(c) for c in range(10)]
    assert [per_class[str(c)]["success_rate"] == 1.0 for c in range(10)] == reached.tolist()
    assert sweep.extras["success_rate"] == pytest.approx(float(reached.float().mean()))
    # The images come from the seeded noise, not from the inputs (up to the rounding of the base class's
    # re-projection x + (x_adv - x)).
    other = attack(lenet_mnist, mnist_test.x[10:20], y, 0.0, target=classes, ctx=AttackContext(seed=0))
    torch.testing.assert_close(images, other, atol=1e-6, rtol=0)
    assert ctx.grad_evals == sum(per_class[str(c)]["mean_steps"] for c in range(10)) + int(reached.sum())


def test_fooling_images_need_targeted_mode():
    with pytest.raises(AttackError, match="fooling_images: targeted must be true"):
        make_attack("fooling_images", targeted=False)
    with pytest.raises(AttackError, match=r"confidence must be a probability in \(0, 1\), got 1.5"):
        make_attack("fooling_images", confidence=1.5)


def test_targeted_ascent_reaches_targets_and_reports_distances(lenet_mnist, mnist_batch):
    x, y = mnist_batch
    target = (y + 1) % 10
    ctx = AttackContext()
    sweep = make_attack("targeted_ascent", target_mode="given").sweep(lenet_mnist, x, y, [0.0], target=target, ctx=ctx)
    ((_, x_adv),) = list(sweep)
    with torch.no_grad():
        p_target = lenet_mnist(x_adv).softmax(1).gather(1, target[:, None]).squeeze(1)
    assert float((p_target >= 0.99).float().mean()) >= 0.8
    assert sweep.extras["success_rate"] == pytest.approx(float((p_target >= 0.99).float().mean()))
    norms = perturbation_norms(x_adv, x)
    assert sweep.extras["mean_l2"] == pytest.approx(float(norms["l2"].mean()), rel=1e-5)
    assert sweep.extras["mean_linf"] == pytest.approx(float(norms["linf"].mean()), rel=1e-5)
    mse = (x_adv - x).pow(2).mean(dim=(1, 2, 3))
    assert sweep.extras["median_mse"] == pytest.approx(float(mse.median()), rel=1e-5)


def test_a_stronger_prior_keeps_images_closer(lenet_mnist, mnist_batch):
    x, y = mnist_batch
    target = (y + 1) % 10
    loose = make_attack("targeted_ascent", target_mode="given", beta=0.0)(lenet_mnist, x, y, 0.0, target=target)
    tight = make_attack("targeted_ascent", target_mode="given", beta=1000.0)(lenet_mnist, x, y, 0.0, target=target)
    mse_loose = float((loose - x).pow(2).mean())
    mse_tight = float((tight - x).pow(2).mean())
    assert mse_tight < 0.8 * mse_loose


def test_adversarial_noise_is_one_perturbation_and_reports_transfer(lenet_mnist, mnist_test):
    x, y = mnist_test.x[:200], mnist_test.y[:200]
    eps = 0.2
    ctx = AttackContext()
    sweep = make_attack("adversarial_noise", source_size=64).sweep(lenet_mnist, x, y, [eps], ctx=ctx)
    ((_, x_adv),) = list(sweep)
    delta = x_adv - x
    # Wherever no clipping happened, every sample got the same delta.
    interior = (x_adv > 0) & (x_adv < 1)
    reference = delta[interior.all(dim=0, keepdim=True).expand_as(x)].reshape(len(x), -1)
    assert reference.shape[1] > 0
    assert float((reference - reference[:1]).abs().max()) < 1e-6
    assert float(delta.abs().max()) <= eps + 1e-6
    report = sweep.extras["fooling"]["0.2"]
    assert report["source_size"] == 64 and report["heldout_size"] == 136
    with torch.no_grad():
        clean, adv = lenet_mnist(x).argmax(1), lenet_mnist(x_adv).argmax(1)
    held = (clean == y)[64:]
    expected = float((adv[64:] != y[64:])[held].float().mean())
    assert report["transfer_fooling_rate"] == pytest.approx(expected)
    assert report["transfer_fooling_rate"] > 0.05
    assert ctx.grad_evals == 40 * 64  # steps x source samples


def test_adversarial_noise_beats_uniform_noise(lenet_mnist, mnist_test):
    x, y = mnist_test.x[:120], mnist_test.y[:120]
    with torch.no_grad():
        learned = lenet_mnist(make_attack("adversarial_noise")(lenet_mnist, x, y, 0.2)).argmax(1)
        noise = lenet_mnist(make_attack("uniform_noise", draws=1)(lenet_mnist, x, y, 0.2)).argmax(1)
    assert int((learned != y).sum()) > int((noise != y).sum())
