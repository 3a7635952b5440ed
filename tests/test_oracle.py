"""Analytic oracle: on a two-class linear model FGSM's minimal epsilon has a closed form.

For logits ``W x + b`` with two classes, the margin of class ``y`` over the other
is ``m(x) = d.x + c`` with ``d = w_y - w_other``, ``c = b_y - b_other``. The
cross-entropy gradient at label ``y`` is a positive multiple of ``-d``, so FGSM
moves along ``-sign(d)`` (linf) or ``-d / ||d||_2`` (l2) and lowers the margin
by exactly ``eps * ||d||_1`` (linf) or ``eps * ||d||_2`` (l2) while no pixel is
clipped. The label flips at ``eps* = |m(x)| / ||d||_1`` (``/ ||d||_2`` for l2),
which is also the minimal distance to the decision boundary in that norm.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from bench.attacks import Attack, make_attack
from bench.minimal_eps import bisect_minimal_eps
from bench.types import Bounds

DIM = (1, 4, 4)


def _linear_problem(seed: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A random two-class linear model and inputs in [0.35, 0.65] that it labels itself (labels = predictions)."""
    gen = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2)).double()
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(2, 16, generator=gen, dtype=torch.float64))
        model[1].bias.copy_(torch.randn(2, generator=gen, dtype=torch.float64) * 0.1)
        x = 0.35 + 0.3 * torch.rand(400, *DIM, generator=gen, dtype=torch.float64)
        # Centre the boundary on the data so that both classes occur.
        centre = model(x).diff(dim=1).median()
        model[1].bias[1] -= centre
        y = model(x).argmax(1)
    return model.eval(), x, y


def _closed_form(model: nn.Module, x: torch.Tensor, y: torch.Tensor, p: float) -> np.ndarray:
    w, b = model[1].weight.detach(), model[1].bias.detach()
    d = w[y] - w[1 - y]  # (N, 16)
    margin = (x.flatten(1) * d).sum(1) + (b[y] - b[1 - y])
    return (margin.abs() / d.norm(p=p, dim=1)).numpy()


def _predictions_at(attack: Attack, model: nn.Module, x: Tensor, y: Tensor, eps: Tensor) -> Tensor:
    """Labels ``(N,)`` of each sample attacked at its own budget ``eps[i]`` (one call per sample)."""
    adv = [attack(model, x[i : i + 1], y[i : i + 1], float(e), bounds=Bounds(0.0, 1.0)) for i, e in enumerate(eps)]
    with torch.no_grad():
        return model(torch.cat(adv)).argmax(1)


@pytest.mark.parametrize(("norm", "p"), [("linf", 1.0), ("l2", 2.0)])
@pytest.mark.parametrize("seed", [0, 1])
def test_fgsm_flips_just_above_the_closed_form_distance_and_not_below(norm: str, p: float, seed: int) -> None:
    model, x, y = _linear_problem(seed)
    star = _closed_form(model, x, y, p)
    keep = (star > 1e-3) & (star < 0.3)  # no pixel is clipped within [0.35 - 0.3, 0.65 + 0.3]
    assert keep.sum() > 50
    x, y, star = x[keep], y[keep], torch.from_numpy(star[keep])
    fgsm = make_attack("fgsm", norm=norm)
    flips_above = _predictions_at(fgsm, model, x, y, star * 1.001)
    flips_below = _predictions_at(fgsm, model, x, y, star * 0.999)
    assert bool((flips_above != y).all()), "FGSM just above the closed-form distance must flip every label"
    assert bool((flips_below == y).all()), "FGSM just below the closed-form distance must flip none"


@pytest.mark.parametrize(("norm", "p"), [("linf", 1.0), ("l2", 2.0)])
def test_minimal_eps_matches_the_closed_form_to_1e_4(norm: str, p: float) -> None:
    model, x, y = _linear_problem(2)
    star = _closed_form(model, x, y, p)
    keep = (star > 1e-3) & (star < 0.3)
    x, y, star = x[keep], y[keep], star[keep]
    found = bisect_minimal_eps(make_attack("fgsm", norm=norm), model, x, y, max_eps=0.5, iterations=30)
    assert found.shape == star.shape
    np.testing.assert_allclose(found, star, atol=1e-4, rtol=0)
    # Bisection reports a budget at which the label really flipped: never below the boundary.
    assert bool((found >= star - 1e-9).all())


def test_art_fgm_agrees_with_the_oracle_too() -> None:
    """ART's FastGradientMethod, run through the ``art:`` adapter, flips exactly where the closed form says."""
    model, x, y = _linear_problem(3)
    model = model.float()
    x = x.float()
    star = _closed_form(model, x, y, 1.0)
    keep = (star > 1e-2) & (star < 0.3)
    x, y, star = x[keep], y[keep], star[keep]
    art = make_attack("art:FastGradientMethod", norm="linf")
    above = _predictions_at(art, model, x, y, torch.from_numpy(star) * 1.001)
    below = _predictions_at(art, model, x, y, torch.from_numpy(star) * 0.999)
    assert bool((above != y).all())
    assert bool((below == y).all())
