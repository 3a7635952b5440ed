"""Noise baselines and occlusion: budgets, worst case over draws, and never stronger than FGSM."""

from __future__ import annotations

import pytest
import torch

from bench.attacks import AttackContext, AttackError, make_attack, perturbation_norms
from bench.attacks.occlusion import patch_positions


def accuracy(model, x_adv, y) -> float:
    with torch.no_grad():
        return float((model(x_adv).argmax(1) == y).float().mean())


@pytest.fixture(scope="module")
def mnist_batch(mnist_test):
    return mnist_test.x[:150], mnist_test.y[:150]


@pytest.mark.parametrize("name", ["uniform_noise", "gaussian_noise"])
def test_noise_is_no_stronger_than_fgsm(name, lenet_mnist, mnist_batch):
    x, y = mnist_batch
    for eps in (0.1, 0.2, 0.3):
        noise = make_attack(name)(lenet_mnist, x, y, eps, ctx=AttackContext(seed=3))
        fgsm = make_attack("fgsm")(lenet_mnist, x, y, eps)
        assert accuracy(lenet_mnist, noise, y) >= accuracy(lenet_mnist, fgsm, y)
        assert float(perturbation_norms(noise, x)["linf"].max()) <= eps + 1e-6


def test_salt_pepper_is_no_stronger_than_fgsm_at_a_comparable_budget(lenet_mnist, mnist_batch):
    x, y = mnist_batch
    # 10% of the pixels moved all the way vs every pixel moved by 0.2: FGSM still wins.
    salt = make_attack("salt_pepper")(lenet_mnist, x, y, 0.1, ctx=AttackContext(seed=3))
    fgsm = make_attack("fgsm")(lenet_mnist, x, y, 0.2)
    assert accuracy(lenet_mnist, salt, y) >= accuracy(lenet_mnist, fgsm, y)


@pytest.mark.parametrize("name", ["uniform_noise", "gaussian_noise", "salt_pepper"])
def test_more_draws_are_never_weaker(name, lenet_mnist, mnist_batch):
    x, y = mnist_batch
    eps = 0.1 if name == "salt_pepper" else 0.3
    with torch.no_grad():
        one = lenet_mnist(make_attack(name, draws=1)(lenet_mnist, x, y, eps, ctx=AttackContext(seed=4))).argmax(1)
        many = lenet_mnist(make_attack(name, draws=8)(lenet_mnist, x, y, eps, ctx=AttackContext(seed=4))).argmax(1)
    # Draw d is the same whatever the number of draws, so every sample fooled by one draw stays fooled.
    assert bool((many != y)[one != y].all())
    assert int((many != y).sum()) > int((one != y).sum())


def test_salt_pepper_flips_exactly_its_pixel_budget(digits_test, lenet_digits):
    x, y = digits_test.x[:40], digits_test.y[:40]
    eps = 0.25  # 16 of the 64 pixels
    x_adv = make_attack("salt_pepper", draws=3)(lenet_digits, x, y, eps)
    changed = (x_adv != x).reshape(len(x), -1)
    assert int(changed.sum(1).max()) <= 16
    assert bool(((x_adv[x_adv != x] == 0) | (x_adv[x_adv != x] == 1)).all())
    assert float(changed.sum(1).float().mean()) > 8  # most chosen pixels really change
    only_salt = make_attack("salt_pepper", salt_ratio=1.0)(lenet_digits, x, y, eps)
    assert bool((only_salt >= x).all())


def test_gaussian_spread_follows_std_ratio(lenet_digits, digits_test):
    x, y = digits_test.x[:40] * 0 + 0.5, digits_test.y[:40]
    narrow = make_attack("gaussian_noise", std_ratio=0.1, draws=1)(lenet_digits, x, y, 0.2)
    wide = make_attack("gaussian_noise", std_ratio=1.0, draws=1)(lenet_digits, x, y, 0.2)
    assert float((narrow - x).std()) == pytest.approx(0.02, rel=0.1)
    assert float((wide - x).std()) > 3 * float((narrow - x).std())


def test_occlusion_is_robust_only_if_correct_at_every_position(lenet_mnist, mnist_batch):
    x, y = mnist_batch[0][:40], mnist_batch[1][:40]
    side, stride = 6, 4
    x_adv = make_attack("occlusion", stride=stride)(lenet_mnist, x, y, float(side))
    # An independent brute force over the same positions.
    positions = patch_positions(28, side, stride)
    correct_everywhere = torch.ones(len(x), dtype=torch.bool)
    with torch.no_grad():
        for top in positions:
            for left in positions:
                cand = x.clone()
                cand[..., top : top + side, left : left + side] = 0.0
                correct_everywhere &= lenet_mnist(cand).argmax(1) == y
        robust = lenet_mnist(x_adv).argmax(1) == y
    assert torch.equal(robust, correct_everywhere)
    assert not bool(correct_everywhere.all()) and bool(correct_everywhere.any())
    assert positions == [0, 4, 8, 12, 16, 20, 22]


def test_bigger_patches_hurt_more(lenet_mnist, mnist_batch):
    x, y = mnist_batch
    attack = make_attack("occlusion", stride=4)
    accs = [accuracy(lenet_mnist, attack(lenet_mnist, x, y, side), y) for side in (4.0, 8.0, 14.0)]
    assert accs[0] >= accs[1] >= accs[2] and accs[2] < accs[0]


@pytest.mark.parametrize(
    ("name", "params", "eps", "message"),
    [
        ("salt_pepper", {}, 1.5, r"salt_pepper: eps is a fraction of pixels and must be in \[0, 1\], got 1.5"),
        ("occlusion", {}, 2.5, "occlusion: eps is the patch side in pixels and must be a whole number, got 2.5"),
        ("occlusion", {}, 9.0, "occlusion: patch side 9 is larger than the 8x8 image"),
    ],
)
def test_budget_errors_name_the_attack_and_the_rule(name, params, eps, message, lenet_digits, digits_test):
    with pytest.raises(AttackError, match=message):
        make_attack(name, **params)(lenet_digits, digits_test.x[:4], digits_test.y[:4], eps)


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("uniform_noise", {"draws": 0}, "uniform_noise: draws must be an integer >= 1, got 0"),
        ("gaussian_noise", {"std_ratio": -1}, "gaussian_noise: std_ratio must be a finite number > 0"),
        ("salt_pepper", {"salt_ratio": 2}, r"salt_pepper: salt_ratio must be a number in \[0, 1\], got 2"),
        ("salt_pepper", {"norm": "linf"}, r"norm 'linf' is not supported here \(allowed: l0\)"),
        ("occlusion", {"stride": 0}, "occlusion: stride must be an integer >= 1"),
        ("uniform_noise", {"targeted": True}, "uniform_noise: targeted mode is not supported"),
    ],
)
def test_bad_parameters_are_named(name, params, message):
    with pytest.raises(AttackError, match=message):
        make_attack(name, **params)


def test_worst_of_scores_only_samples_not_yet_misclassified_and_matches_scoring_every_candidate(
    lenet_mnist, mnist_batch
) -> None:
    """The first misclassified candidate is final: later candidates skip those samples, with the same result."""
    import torch.nn.functional as F

    from bench.attacks.worst_case import worst_of

    x, y = mnist_batch
    gen = torch.Generator().manual_seed(0)
    cands = [(x + 0.3 * torch.randn(x.shape, generator=gen)).clamp(0, 1) for _ in range(12)]
    ctx = AttackContext()
    got = worst_of(lenet_mnist, x, y, iter(cands), ctx=ctx)

    # Every candidate on every sample, kept by the same rule.
    best, best_score = x.clone(), torch.full((len(x),), -torch.inf)
    fooled_at = torch.full((len(x),), len(cands))
    with torch.no_grad():
        for i, cand in enumerate(cands):
            logits = lenet_mnist(cand)
            wrong = logits.argmax(1) != y
            fooled_at = torch.where(wrong & (fooled_at == len(cands)), torch.full_like(fooled_at, i), fooled_at)
            score = torch.where(wrong, torch.inf, F.cross_entropy(logits, y, reduction="none"))
            better = score > best_score
            best[better], best_score = cand[better], torch.where(better, score, best_score)
    assert torch.equal(got, best)
    # Forward passes: each sample until (and including) its first misclassified candidate.
    expected = int(torch.clamp(fooled_at + 1, max=len(cands)).sum())
    assert 0 < (fooled_at < len(cands)).sum() < len(x)  # the batch mixes fooled and robust samples
    assert ctx.forward_evals == expected < len(cands) * len(x)
