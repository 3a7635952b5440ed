"""Randomized smoothing (Cohen, Rosenfeld & Kolter 2019): a certified L2 radius for the *smoothed* classifier.

The smoothed classifier predicts the class the base model returns most often under Gaussian noise
``N(0, sigma^2 I)``. CERTIFY draws ``n0`` noisy copies to pick that class, ``n`` more to bound its
probability below (one-sided Clopper-Pearson at ``alpha``), and certifies the radius
``sigma * PhiInverse(pA_lower)`` when ``pA_lower >= 1/2``; otherwise it abstains (not certified). The
certificate holds with probability at least ``1 - alpha``, for the smoothed classifier, not the base model:
an attack on the base model can break a sample the smoothed classifier is certified on, so the run's
soundness check compares attacks with the bound certifiers (``ibp``, ``crown``) only. Noise is not clipped to
the data bounds (as in Cohen et al. and ART). One certification serves every eps of a sweep.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from scipy import stats
from torch import nn

from bench.certify.base import Certifier, CertifyResult
from bench.certify.chain import CertifyError
from bench.types import Bounds, Norm


def clopper_pearson_lower(successes: torch.Tensor, trials: int, alpha: float) -> torch.Tensor:
    """One-sided ``1 - alpha`` lower confidence bounds of binomial proportions (0 where there is no success)."""
    k = successes.cpu().double().numpy()
    lower = stats.beta.ppf(alpha, k, trials - k + 1)
    return torch.as_tensor(lower).nan_to_num(0.0)


@dataclass(frozen=True, kw_only=True)
class Smoothing(Certifier):
    """Randomized smoothing's CERTIFY: a per-sample certified L2 radius of the Gaussian-smoothed classifier.

    Args:
        norm: "l2" (the only one: Gaussian smoothing certifies L2 balls).
        sigma: standard deviation of the noise, in pixel units (default 0.25).
        n0: noisy samples that choose the class (default 100).
        n: noisy samples that bound its probability (default 1,000; Cohen et al. use 100,000).
        alpha: the certificate fails with probability at most alpha (default 0.001).
        batch_size: noisy copies per model call (default 500).
        seed: seeds the noise (same arguments, same radii).

    Cost: ``n0 + n`` forward passes per sample, once for every eps of a sweep.
    """

    name: ClassVar[str] = "smoothing"
    norms: ClassVar[tuple[Norm, ...]] = (Norm.L2,)

    norm: Norm = Norm.L2
    sigma: float = 0.25
    n0: int = 100
    n: int = 1_000
    alpha: float = 0.001
    batch_size: int = 500
    seed: int = 0

    def check_params(self) -> None:
        checks = (
            ("sigma", isinstance(self.sigma, int | float) and math.isfinite(self.sigma) and self.sigma > 0, "> 0"),
            ("n0", isinstance(self.n0, int) and 1 <= self.n0 <= 1_000_000, "an integer from 1 to 1,000,000"),
            ("n", isinstance(self.n, int) and 1 <= self.n <= 1_000_000, "an integer from 1 to 1,000,000"),
            ("alpha", isinstance(self.alpha, float) and 0 < self.alpha < 0.5, "a number in (0, 0.5)"),
            ("batch_size", isinstance(self.batch_size, int) and self.batch_size >= 1, "an integer >= 1"),
        )
        for field, ok, allowed in checks:
            if not ok:
                raise CertifyError(f"smoothing: {field} must be {allowed}, got {getattr(self, field)!r}")

    def counts(self, model: nn.Module, x: torch.Tensor, draws: int, generator: torch.Generator) -> torch.Tensor:
        """``(N, K)`` how often the base model predicts each class over ``draws`` noisy copies of each sample.

        Each chunk of noise is drawn once and added to every sample of ``x``: a sample's ``draws`` copies are
        still independent (the certificate is per sample), and drawing the noise no longer costs as much as
        the model calls. Copies go to the model ``batch_size`` at a time, several samples per call when a
        chunk is smaller than that.
        """
        tallies: torch.Tensor | None = None
        for start in range(0, draws, self.batch_size):
            k = min(self.batch_size, draws - start)
            noise = self.sigma * torch.randn((k, *x.shape[1:]), generator=generator, device=x.device, dtype=x.dtype)
            group = max(1, self.batch_size // k)
            found = []
            for first in range(0, len(x), group):
                logits = model((x[first : first + group].unsqueeze(1) + noise.unsqueeze(0)).flatten(0, 1))
                predicted = logits.argmax(dim=1).view(-1, k)
                found.append(F.one_hot(predicted, num_classes=logits.shape[1]).sum(dim=1))
            chunk = torch.cat(found)
            tallies = chunk if tallies is None else tallies + chunk
        assert tallies is not None  # draws >= 1 (check_params)
        return tallies

    def radii(self, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(prediction, radius)`` ``(N,)``: the smoothed class (-1: abstain) and its certified L2 radius (0 then)."""
        generator = torch.Generator(device=x.device).manual_seed(int(self.seed) % 2**63)
        chosen = self.counts(model, x, self.n0, generator).argmax(dim=1)
        counts = self.counts(model, x, self.n, generator)
        p_lower = clopper_pearson_lower(counts.gather(1, chosen.view(-1, 1)).squeeze(1), self.n, self.alpha)
        certain = p_lower >= 0.5
        radius = torch.where(
            certain, self.sigma * torch.as_tensor(stats.norm.ppf(p_lower.clamp(max=1 - 1e-12).numpy())), 0.0
        )
        prediction = torch.where(certain, chosen.cpu(), torch.full_like(chosen.cpu(), -1))
        return prediction, radius.float()

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, bounds: Bounds) -> CertifyResult:
        return self.at_radius(*self.radii(model, x), y, eps)

    def sweep(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        epsilons: tuple[float, ...],
        *,
        bounds: Bounds = Bounds(),
    ) -> list[CertifyResult]:
        """Every eps from one certification: the radii do not depend on eps."""
        for eps in epsilons:
            self.check_arguments(x, y, eps)
        with torch.no_grad():
            prediction, radius = self.radii(model.eval(), x)
        return [self.at_radius(prediction, radius, y, eps) for eps in epsilons]

    def at_radius(self, prediction: torch.Tensor, radius: torch.Tensor, y: torch.Tensor, eps: float) -> CertifyResult:
        """Certified where the smoothed class is the label and the certified radius exceeds ``eps``."""
        certified = (prediction == y.cpu()) & (radius > eps)
        radius = torch.where(prediction == y.cpu(), radius, torch.zeros_like(radius))
        nan = torch.full((len(y),), float("nan"))
        return CertifyResult(
            certified=certified, margin_lower=nan, radius=radius, extras={"abstained": int((prediction < 0).sum())}
        )
