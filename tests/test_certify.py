"""Certifiers (issue 28): their bounds are sound on every zoo architecture they support, a layer they cannot
bound is a clear error, and each agrees with its ART counterpart as its declaration says."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from bench.attacks import make_attack
from bench.certify import CERTIFIERS, CertifyError, certifier_abilities, make_certifier
from bench.certify.crosscheck import ArtNet, compare_crown, compare_ibp, compare_smoothing, train_art_net
from bench.cli import app
from bench.data import load_dataset, select
from model_zoo import MODELS
from tests.conftest import SHORT_CROWN, trained

ARCHITECTURES = (
    "mlp",
    "lenet",
    "lenet_crown",  # CROWN-IBP trained (a short recipe): strided convolutions, no pooling
    pytest.param("cnn", marks=pytest.mark.slow),  # full CROWN over every conv neuron: 15-35 s each
    pytest.param("convnet", marks=pytest.mark.slow),
    pytest.param("convnet_bn", marks=pytest.mark.slow),
)
"""Zoo architectures of chains of Linear, Conv2d, ReLU, MaxPool2d, BatchNorm, Normalize (every bound certifier)."""
RECIPES = {"lenet_crown": SHORT_CROWN}
"""Shortened recipes, for the digits."""
VARIANTS = {"ibp": {}, "crown": {"intermediate": "crown"}, "crown-auto": {}, "crown-ibp": {"intermediate": "ibp"}}
RANDOM_POINTS = 1000


def _true_margin(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logits = model(x)
    others = logits.clone()
    others[torch.arange(len(y)), y] = -torch.inf
    return logits[torch.arange(len(y)), y] - others.max(dim=1).values


def _worst_margins(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    """The smallest true margin over 1,000 random points of the ball (clipped to [0, 1]) and PGD's point."""
    gen = torch.Generator().manual_seed(0)
    worst = torch.full((len(y),), torch.inf)
    with torch.no_grad():
        for _ in range(RANDOM_POINTS // 50):
            for _ in range(50):
                if norm == "linf":
                    delta = (torch.rand(x.shape, generator=gen) * 2 - 1) * eps
                else:
                    delta = torch.randn(x.shape, generator=gen)
                    delta *= (
                        eps
                        * torch.rand(len(x), 1, 1, 1, generator=gen)
                        / delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
                    )
                worst = torch.minimum(worst, _true_margin(model, (x + delta).clamp(0, 1), y))
    adversarial = make_attack("pgd", norm=norm, steps=50, restarts=2)(model, x, y, eps)
    with torch.no_grad():
        return torch.minimum(worst, _true_margin(model, adversarial, y))


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.02), ("l2", 0.25)])
def test_bounds_hold_at_random_points_and_at_pgds_worst_point(architecture: str, norm: str, eps: float) -> None:
    data = load_dataset("digits", "test")
    model = trained(architecture, **RECIPES.get(architecture, {})).eval()
    x, y = data.x[:24], data.y[:24]
    worst = _worst_margins(model, x, y, norm, eps)
    for variant, params in VARIANTS.items():
        result = make_certifier(variant.split("-")[0], norm=norm, **params).certify(model, x, y, eps)
        assert (result.margin_lower <= worst + 1e-4).all(), (architecture, variant, result.margin_lower - worst)
        assert not (result.certified & (worst <= 0)).any(), (architecture, variant, "certified, yet broken")


def test_crown_is_at_least_as_tight_as_ibp_and_certifies_a_real_model() -> None:
    data = load_dataset("digits", "test")
    model = trained("mlp").eval()
    x, y = data.x[:64], data.y[:64]
    ibp = make_certifier("ibp").certify(model, x, y, 0.03)
    crown = make_certifier("crown").certify(model, x, y, 0.03)
    assert (crown.margin_lower >= ibp.margin_lower - 1e-4).all()
    assert crown.certified.float().mean() >= ibp.certified.float().mean()
    assert crown.certified.float().mean() > 0.5  # not vacuous on a small MLP at a small eps
    at_zero = make_certifier("crown").certify(model, x, y, 0.0)
    assert torch.equal(at_zero.certified, model(x).argmax(1) == y)  # eps 0: exactly the clean-correct samples


class _Residual(nn.Sequential):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + super().forward(x)


class _Branches(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :10] * 2


@pytest.mark.parametrize("certifier", ["ibp", "crown"])
def test_a_layer_it_cannot_bound_is_a_clear_error(certifier: str) -> None:
    quantized = MODELS.get("lenet_quantized").factory((1, 8, 8), 10).eval()
    x, y = torch.rand(2, 1, 8, 8), torch.tensor([0, 1])
    with pytest.raises(CertifyError, match=rf"{certifier}: cannot bound layer 0 \(a non-differentiable layer\)"):
        make_certifier(certifier).certify(quantized, x, y, 0.1)
    sigmoid = nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.Sigmoid())
    with pytest.raises(CertifyError, match=rf"{certifier}: cannot bound layer 2 \(layer type Sigmoid\).*Conv2d"):
        make_certifier(certifier).certify(sigmoid, x, y, 0.1)
    with pytest.raises(CertifyError, match=rf"{certifier}: cannot bound the model \(layer type _Branches\)"):
        make_certifier(certifier).certify(_Branches(), x, y, 0.1)
    residual = nn.Sequential(nn.Flatten(), _Residual(nn.Linear(64, 64), nn.ReLU()), nn.Linear(64, 10))
    with pytest.raises(
        CertifyError, match=rf"{certifier}: cannot bound layer 1 \(_Residual overrides Sequential.forward\)"
    ):
        make_certifier(certifier).certify(residual, x, y, 0.1)  # a chain of layers in form, not in what it computes
    hooked = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    hooked[1].register_forward_hook(lambda module, inputs, output: output * 2)
    with pytest.raises(CertifyError, match=rf"{certifier}: cannot bound layer 1 \(Linear with forward hooks\)"):
        make_certifier(certifier).certify(hooked, x, y, 0.1)


def test_declarations_and_parameters() -> None:
    assert set(CERTIFIERS.names()) == {"ibp", "crown", "smoothing"}
    for name in CERTIFIERS.names():
        declared = certifier_abilities(name)
        assert declared.art and declared.layers and declared.kind in ("bound", "smoothed")
    with pytest.raises(
        CertifyError, match=r"certifier 'crown' has no parameter 'steps' \(allowed: intermediate, norm\)"
    ):
        make_certifier("crown", steps=3)
    with pytest.raises(CertifyError, match=r"smoothing: norm 'linf' is not allowed \(allowed: l2\)"):
        make_certifier("smoothing", norm="linf")
    with pytest.raises(CertifyError, match=r"crown: intermediate 'deepz' is not allowed"):
        make_certifier("crown", intermediate="deepz")
    with pytest.raises(CertifyError, match="unknown certifier 'lp'"):
        make_certifier("lp")


# -- cross-checks against ART's certifiers ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def art_net() -> ArtNet:
    """A Conv2d/Linear/ReLU network ART converts, trained briefly on digits (so that some samples certify)."""
    return train_art_net(load_dataset("digits", "train"))


def test_ibp_logit_bounds_equal_arts(art_net: ArtNet) -> None:
    test = select(load_dataset("digits", "test"), limit=40)
    for eps in (0.01, 0.05):
        row = compare_ibp(art_net, test, eps)
        assert row.passed, row  # measured: at most 6e-7 of the logits' magnitude


def test_crown_certifies_every_sample_deepz_certifies(art_net: ArtNet) -> None:
    test = select(load_dataset("digits", "test"), limit=60)
    for eps in (0.01, 0.02):
        row, deepz, crown = compare_crown(art_net, test, eps)
        assert deepz > 0, "DeepZ certified nothing: the comparison would be empty"
        assert row.passed and crown >= deepz, (row, deepz, crown)


def test_smoothing_agrees_with_arts_certify(art_net: ArtNet) -> None:
    rows = compare_smoothing(art_net, select(load_dataset("digits", "test"), limit=50))
    assert all(row.passed for row in rows), rows


def test_bench_crosscheck_certifiers() -> None:
    result = CliRunner().invoke(app, ["crosscheck", "--certifiers", "--data", "digits", "--limit", "30"])
    assert result.exit_code == 0, result.output
    assert "PytorchDeepZ" in result.output and "all 7 certifier comparisons agree with ART" in result.output


def test_bounds_never_exceed_the_exact_minimum_margin_of_a_2d_network() -> None:
    """A tiny network on 2-D inputs: the minimum margin over the box, found on a dense 401 x 401 grid (the true
    minimum is at most that), is never below IBP's or CROWN's bound; CROWN's is never looser than IBP's."""
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    x = torch.rand(12, 2)
    with torch.no_grad():
        y = net(x).argmax(dim=1)
    ticks = torch.linspace(-1, 1, 401)
    grid = torch.cartesian_prod(ticks, ticks)  # (401^2, 2) offsets in units of eps
    for eps in (0.02, 0.05, 0.1):
        exact = torch.empty(len(x))
        with torch.no_grad():
            for i in range(len(x)):
                points = (x[i] + eps * grid).clamp(0, 1)
                exact[i] = _true_margin(net, points, y[i].expand(len(points))).min()
        ibp = make_certifier("ibp").certify(net, x, y, eps)
        for intermediate in ("crown", "ibp"):
            crown = make_certifier("crown", intermediate=intermediate).certify(net, x, y, eps)
            assert (crown.margin_lower <= exact + 1e-5).all(), (eps, intermediate, crown.margin_lower - exact)
            assert (crown.margin_lower >= ibp.margin_lower - 1e-5).all()
        assert (ibp.margin_lower <= exact + 1e-5).all(), (eps, ibp.margin_lower - exact)
        # and tight here: CROWN within 0.0085 of the grid minimum on three such networks (IBP up to 0.19)
        assert (exact - make_certifier("crown").certify(net, x, y, eps).margin_lower <= 0.02).all()
