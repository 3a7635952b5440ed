"""Model checks: what the engine verifies about every model (zoo or external) before attacking it.

Outputs must be finite logits with one column per class (not probabilities or
log-probabilities, unless the suite allows them), deterministic in eval mode;
``models.json`` records clean accuracy, the layers eval mode switches and the
fraction of samples with an all-zero input gradient (gradient masking).
Not to be confused with the regression *gate* (``bench check``) or the report's *sanity flags*.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from bench.attacks import AttackContext
from bench.data import DataSplit
from bench.rundir import RunError
from bench.suite import Suite


class ModelOutputError(RunError):
    """A model whose outputs are not usable logits."""


def check_logits(logits: torch.Tensor, *, model: str, allow_probabilities: bool) -> list[str]:
    """Refuse (or warn about) outputs that are not logits; returns the warnings issued.

    Probabilities (rows in [0, 1] summing to 1) and log-probabilities (rows
    whose logsumexp is 0) make cross-entropy gradients wrong or vanishing,
    which silently weakens every gradient attack (AutoAttack's first check).
    """
    if not bool(torch.isfinite(logits).all()):
        raise ModelOutputError(
            f"model {model!r} returned NaN or infinite outputs on clean inputs (it must return finite logits)"
        )
    problems = []
    rows = logits.double()
    if bool(((rows >= 0) & (rows <= 1)).all()) and bool(
        torch.allclose(rows.sum(1), torch.ones(len(rows), dtype=torch.double), atol=1e-3)
    ):
        problems.append(
            f"model {model!r} outputs look like probabilities (rows in [0, 1] summing to 1); attacks need logits"
        )
    elif bool((rows <= 0).all()) and bool(
        torch.allclose(torch.logsumexp(rows, 1), torch.zeros(len(rows), dtype=torch.double), atol=1e-3)
    ):
        problems.append(
            f"model {model!r} outputs look like log-probabilities (logsumexp of each row is 0); attacks need logits"
        )
    if problems and not allow_probabilities:
        raise ModelOutputError(problems[0] + " (set 'allow_probabilities: true' in the suite to run anyway)")
    for p in problems:
        warnings.warn(p, stacklevel=2)
    return problems


_MODE_DEPENDENT = (
    nn.modules.batchnorm._BatchNorm,
    nn.modules.dropout._DropoutNd,
    nn.modules.instancenorm._InstanceNorm,
)


def mode_info(model: nn.Module) -> dict[str, Any]:
    """What ``models.json`` records about train/eval mode.

    Every model is evaluated in eval mode whatever mode its factory or
    checkpoint left it in (``model_zoo.freeze``); ``mode_dependent_layers``
    lists the layers that switch changes (BatchNorm uses its running
    statistics, Dropout is off), so a reader knows the switch mattered.
    """
    return {
        "eval_mode": not model.training,
        "mode_dependent_layers": [
            f"{name} ({type(m).__name__})" for name, m in model.named_modules() if isinstance(m, _MODE_DEPENDENT)
        ],
    }


@torch.no_grad()
def check_deterministic(model: nn.Module, x: torch.Tensor, *, model_id: str, first: torch.Tensor | None = None) -> None:
    """Refuse a model whose logits differ between two identical calls in eval mode.

    ``x``: ``(N, C, H, W)`` pixels; ``first``: the logits of a call on ``x``
    already made (the clean pass), so the check costs one more call instead of
    two. Randomness left inside ``forward`` (say ``F.dropout(..., training=True)``
    or injected noise) survives ``eval()`` and makes robust accuracy a random
    variable: attacks then look stronger or weaker by chance (AutoAttack's
    randomness check).
    """
    second = model(x)
    first = model(x) if first is None else first.to(second.device)
    if not torch.allclose(first, second, rtol=1e-5, atol=1e-6):
        diff = float((first - second).abs().max())
        raise ModelOutputError(
            f"model {model_id!r} gives different outputs for two identical calls in eval mode (max difference "
            f"{diff:.3g}): remove randomness from forward (functional dropout with training=True, noise); "
            "the harness needs a deterministic model"
        )


def model_checks(
    model: nn.Module, model_id: str, suite: Suite, data: DataSplit, device: torch.device
) -> dict[str, Any]:
    """What every model must pass before an attack, zoo or external, and what ``models.json`` records of it.

    Logits of one row per class, not probabilities (unless the suite allows
    them), deterministic in eval mode; clean accuracy, mode-dependent layers,
    the zero-gradient fraction and whether logits under autograd are exact.
    """
    logits = _logits(model, data.x, device, suite.batch_size)
    if logits.ndim != 2 or logits.shape[1] != data.num_classes:
        raise ModelOutputError(
            f"model {model_id!r} returns outputs of shape {tuple(logits.shape[1:])} per sample; "
            f"data set {data.name!r} has {data.num_classes} classes"
        )
    warnings_issued = check_logits(logits, model=model_id, allow_probabilities=suite.allow_probabilities)
    first_batch = min(len(data), suite.batch_size)  # the clean pass's first call
    x_first = data.x[:first_batch].to(device)
    check_deterministic(model, x_first, model_id=model_id, first=logits[:first_batch])
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "clean_accuracy": float((logits.argmax(1) == data.y).float().mean()),
        "output_warnings": warnings_issued,
        **mode_info(model),
        "zero_gradient_fraction": zero_gradient_fraction(model, data, device, suite.batch_size),
        "gradient_logits_exact": gradient_logits_exact(model, x_first, logits[:first_batch]),
    }


def gradient_logits_exact(model: nn.Module, x: torch.Tensor, logits: torch.Tensor | None = None) -> bool:
    """Whether ``model``'s logits under autograd equal its inference logits of ``x`` bit for bit.

    ``x``: ``(N, C, H, W)`` pixels, one model call; ``logits``: ``(N, K)`` from a
    ``torch.no_grad()`` call on the same ``x`` when the caller has them (else made
    here). Built-in layers compute the same values either way; a model whose
    ``forward`` branches on grad mode (inference fast paths, custom code) may not,
    and then the cells never take a gradient's logits for clean predictions
    (:class:`~bench.attacks.AttackContext`, ``gradient_logits``). ``False`` too
    where the check cannot run: an inference-mode ``x``, or a ``forward`` that
    cannot run under autograd (it leaves torch). No backward pass runs.
    """
    if x.is_inference():
        return False
    if logits is None:
        with torch.no_grad():
            logits = model(x)
    try:
        with torch.enable_grad():
            under_grad = model(x.detach().requires_grad_(True)).detach()
    except RuntimeError:  # e.g. .numpy() on a tensor that requires grad: no gradient attack runs on it either
        return False
    return bool(torch.equal(under_grad.to(logits.device), logits))


ZERO_GRADIENT_SAMPLES = 256
"""Samples the zero-gradient diagnostic looks at (the first of the evaluation data): near the report's
10% threshold the estimate's standard error is under 2 points, for a quarter of a full-data gradient
pass on the quickstart's 1,000 samples."""


def zero_gradient_fraction(
    model: nn.Module, data: DataSplit, device: torch.device, batch_size: int, *, n: int = ZERO_GRADIENT_SAMPLES
) -> float:
    """Fraction in [0, 1] of samples whose cross-entropy input gradient at the clean input is exactly zero.

    Computed once per model on the first ``n`` samples (it does not depend on
    the attack): many exact zeros (saturated softmax, quantizing or
    non-differentiable layers) leave gradient attacks nothing to follow, i.e.
    gradient masking; the report flags it.
    """
    data = data.subset(n)
    ctx = AttackContext()
    zero = 0
    for i in range(0, len(data), batch_size):
        grad, _ = ctx.loss_gradient(model, data.x[i : i + batch_size].to(device), data.y[i : i + batch_size].to(device))
        zero += int((grad.flatten(1) == 0).all(1).sum())
    return zero / max(1, len(data))


@torch.no_grad()
def _logits(model: nn.Module, x: torch.Tensor, device: torch.device, batch_size: int) -> torch.Tensor:
    return torch.cat([model(x[i : i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)])
