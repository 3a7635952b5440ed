"""The certifier contract: a sound lower bound on robustness, per sample, beside the attacks' upper bound.

A certifier answers, for each sample and eps, whether **no** perturbation in the ball (intersected with the
data bounds) can change the model's prediction away from the label. ``certified`` is that proof; samples it
cannot prove are not claimed robust, whatever the attacks found. Robust accuracy then lies between the
certified fraction and the attacked one.

Every certifier is a frozen dataclass of keyword-only parameters with documented defaults, registered with
its declaration (norms, the layer types it can bound, its ART counterpart), like an attack.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from bench.certify.chain import CertifyError
from bench.types import Bounds, Norm


@dataclass(frozen=True)
class CertifyResult:
    """What a certifier proved about ``N`` samples at one eps.

    Attributes:
        certified: ``(N,)`` bool: the prediction is the label at every point of the ball (a clean error is
            never certified).
        margin_lower: ``(N,)`` float: a lower bound of ``min_j (logit_label - logit_j)`` over the ball (bound
            certifiers; ``nan`` for smoothing). Positive exactly where ``certified``.
        radius: ``(N,)`` float: the certified L2 radius (randomized smoothing; ``nan`` elsewhere, 0 for an
            abstention or a wrong prediction).
        extras: certifier-specific numbers (e.g. smoothing's abstentions).
    """

    certified: torch.Tensor
    margin_lower: torch.Tensor
    radius: torch.Tensor
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Certifier:
    """Base class of every certifier.

    Fields every certifier has:
        norm: the norm eps is measured in (``linf`` or ``l2``; each certifier lists its own).
    """

    name: ClassVar[str] = ""
    norms: ClassVar[tuple[Norm, ...]] = (Norm.LINF, Norm.L2)

    norm: Norm = Norm.LINF

    def __post_init__(self) -> None:
        try:
            norm = Norm(str(self.norm).replace("inf", "linf") if str(self.norm) == "inf" else str(self.norm))
        except ValueError:
            norm = None
        if norm not in self.norms:
            allowed = ", ".join(n.value for n in self.norms)
            raise CertifyError(f"{self.name}: norm {self.norm!r} is not allowed (allowed: {allowed})")
        object.__setattr__(self, "norm", norm)
        self.check_params()

    def check_params(self) -> None:
        """Raise :class:`CertifyError` for invalid parameters."""

    def certify(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, bounds: Bounds = Bounds()
    ) -> CertifyResult:
        """Certify ``x`` ``(N, C, H, W)`` in ``bounds`` with labels ``y`` ``(N,)`` at radius ``eps`` (pixel units).

        The model is put in eval mode and never changed. Raises :class:`CertifyError` for a model or layer
        the certifier cannot bound, or a bad eps.
        """
        self.check_arguments(x, y, eps)
        model = model.eval()
        with torch.no_grad():
            return self.run(model, x, y.long(), float(eps), bounds=bounds)

    def check_model(self, model: nn.Module) -> None:
        """Raise :class:`CertifyError` naming the first layer of ``model`` this certifier cannot bound (before any
        work: a run checks every (model, certifier) pair before its first cell). Certifiers that only run the
        model (smoothing) accept any."""

    def check_arguments(self, x: torch.Tensor, y: torch.Tensor, eps: float) -> None:
        """Raise :class:`CertifyError` for a bad eps or mismatched samples and labels."""
        if not math.isfinite(eps) or eps < 0:
            raise CertifyError(f"{self.name}: eps must be a finite number >= 0, got {eps}")
        if x.ndim < 2 or len(x) != len(y):
            raise CertifyError(f"{self.name}: x must be (N, ...) with N labels, got {tuple(x.shape)} and {len(y)}")

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, bounds: Bounds) -> CertifyResult:
        raise NotImplementedError

    def sweep(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        epsilons: tuple[float, ...],
        *,
        bounds: Bounds = Bounds(),
    ) -> list[CertifyResult]:
        """One :class:`CertifyResult` per eps of ``epsilons`` (a certifier whose work does not grow with the number
        of epsilons, like smoothing, overrides it to do that work once)."""
        return [self.certify(model, x, y, eps, bounds=bounds) for eps in epsilons]


def input_box(x: torch.Tensor, eps: float, bounds: Bounds) -> tuple[torch.Tensor, torch.Tensor]:
    """The coordinate box of the eps ball (linf, or the box around an l2 ball) intersected with ``bounds``."""
    return (x - eps).clamp(bounds.low, bounds.high), (x + eps).clamp(bounds.low, bounds.high)


def margin_spec(y: torch.Tensor, classes: int) -> torch.Tensor:
    """``C`` ``(N, K-1, K)``: row j is ``e_label - e_j`` for each other class j (the margins to bound below)."""
    n = len(y)
    eye = torch.eye(classes, device=y.device)
    rows = eye[y].unsqueeze(1) - eye.unsqueeze(0).expand(n, classes, classes)  # (N, K, K): e_y - e_j
    keep = torch.ones(n, classes, dtype=torch.bool, device=y.device)
    keep[torch.arange(n), y] = False
    return rows[keep].view(n, classes - 1, classes)


def result_from_margins(margin_lower: torch.Tensor, clean_correct: torch.Tensor) -> CertifyResult:
    """Certified where the lowest margin bound is positive and the clean prediction is right."""
    lowest = margin_lower.min(dim=1).values
    certified = (lowest > 0) & clean_correct
    nan = torch.full_like(lowest, float("nan"))
    return CertifyResult(certified=certified.cpu(), margin_lower=lowest.cpu(), radius=nan.cpu())
