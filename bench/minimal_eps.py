"""Per-sample minimal epsilon by bisection, for attacks that declare a method at registration.

``minimal_eps="ray"`` (FGSM-like ray attacks): one direction, bisection along
``clip(x + eps * d)``; ``minimal_eps="bisect"`` (BIM/PGD-like): bisection over the
radius, each probe a run at per-sample radii (the attack's ``attack_radii``).
(:func:`bench.stats.first_fooled_eps` reads a grid instead; this
module bisects, hence :func:`bisect_minimal_eps`.)

The minimal epsilon of a sample is the smallest budget at which the attack
fools it (untargeted) or sends it to its target (targeted): ``0`` for a
sample the model already gets wrong (untargeted), ``inf`` when even
``max_eps`` does not succeed. Bisection keeps a bracket ``(lo, hi]`` with the
attack failing at ``lo`` and succeeding at ``hi`` and returns ``hi``, so the
reported value is a budget at which an adversarial example was really found,
at most ``max_eps / 2 ** iterations`` above the transition. In a suite cell
(:func:`add_minimal_eps`) the bracket of a ``bisect`` attack starts from the
sweep's runs at the grid eps, which are runs of the same attack: the first grid
eps that succeeded and the one below it.

The robust-accuracy curve read from the distribution,
``accuracy(eps) = mean(clean_correct & (min_eps > eps))``
(:func:`robust_curve`), agrees with fixed-eps runs of the same attack up to
that tolerance (FGSM: exactly where the loss is monotone along the ray).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
import pandas as pd
import torch
from torch import nn

from bench.attacks import ATTACKS, Attack, AttackContext, AttackError, MinimalEpsMethod, derive_seed
from bench.data import DataSplit
from bench.types import Bounds


def supported_attacks() -> list[str]:
    """Registry names of the attacks that declare a minimal-eps method, in registration order."""
    return ATTACKS.declaring(lambda abilities: abilities.minimal_eps is not None)


def method_of(attack: Attack) -> MinimalEpsMethod:
    """The declared minimal-eps method of ``attack``; raises :class:`AttackError` when it declares none."""
    method = attack.abilities.minimal_eps if attack.abilities is not None else None
    if method is None:
        allowed = ", ".join(supported_attacks())
        raise AttackError(f"minimal eps is not available for attack {attack.name!r} (allowed: {allowed})")
    return method


class RadiusAttack(Protocol):
    """What ``minimal_eps="bisect"`` needs: one run with a radius per sample (see ``IterativeGradientAttack``)."""

    def attack_radii(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        eps: torch.Tensor,
        *,
        target: torch.Tensor | None,
        bounds: Bounds,
        ctx: AttackContext,
        key: tuple[object, ...],
        rows: torch.Tensor | None = None,
        full_n: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...


SuccessAt = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def bisect_radii(
    success_at: SuccessAt,
    n: int,
    *,
    max_eps: float,
    iterations: int,
    device: torch.device,
    bracket: tuple[np.ndarray, np.ndarray] | None = None,
) -> torch.Tensor:
    """Smallest per-sample radius in ``(0, max_eps]`` at which ``success_at`` holds, ``inf`` if none.

    ``success_at(eps, rows)`` gets radii ``(k,)`` (float64) for the samples ``rows``
    ``(k,)`` and returns ``(k,)`` booleans. Each sample's bracket ``(lo, hi]`` (failing at
    ``lo``, succeeding at ``hi``) is halved until it is at most ``max_eps / 2 ** iterations``
    wide, and ``hi`` is returned (float64, ``(n,)``).

    Without ``bracket`` every sample starts from ``(0, max_eps]`` after one probe at
    ``max_eps`` (``iterations + 1`` calls). ``bracket``: per-sample ``(lo, hi)`` ``(n,)``
    already known (:func:`grid_bracket`; ``hi`` ``inf``: no success up to ``max_eps``), so
    no probe at ``max_eps`` and fewer halvings: a grid of 6 steps up to ``max_eps`` saves
    3 of the 11 calls.
    """
    if not max_eps > 0:
        raise AttackError(f"minimal eps: max_eps must be > 0, got {max_eps}")
    f64 = {"dtype": torch.float64, "device": device}
    if bracket is None:
        lo = torch.zeros(n, **f64)
        hi = torch.full((n,), float(max_eps), **f64)
        found = success_at(hi, torch.arange(n, device=device))
    else:
        lo_np, hi_np = (np.asarray(b, dtype=np.float64) for b in bracket)
        finite = np.isfinite(hi_np)
        if lo_np.shape != (n,) or hi_np.shape != (n,):
            raise AttackError(f"minimal eps: bracket shapes {lo_np.shape}, {hi_np.shape}; expected ({n},) each")
        if not ((lo_np >= 0) & (lo_np <= hi_np) & (~finite | (hi_np <= max_eps))).all():
            raise AttackError(f"minimal eps: a bracket needs 0 <= lo <= hi <= max_eps ({max_eps}) or hi = inf")
        lo, hi = torch.as_tensor(lo_np).to(**f64), torch.as_tensor(hi_np).to(**f64)
        found = torch.isfinite(hi)
    tolerance = float(max_eps) / 2**iterations
    for _ in range(iterations):  # each call halves every bracket it probes: at most ``iterations`` calls
        rows = (found & (hi - lo > tolerance)).nonzero().squeeze(1)
        if rows.numel() == 0:
            break
        mid = (lo[rows] + hi[rows]) / 2
        ok = success_at(mid, rows)
        hi[rows[ok]] = mid[ok]
        lo[rows[~ok]] = mid[~ok]
    return torch.where(found, hi, torch.full_like(hi, torch.inf))


def grid_bracket(epsilons: Sequence[float], success: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample bisection bracket ``(lo, hi)`` ``(N,)`` from an attack's runs at fixed ``epsilons`` ``(E,)``.

    ``success`` ``(E, N)``: whether the run at each eps fooled the sample (untargeted) or sent
    it to its target. ``hi`` is the smallest eps at which a run succeeded (``inf``: none did),
    ``lo`` the grid eps just below it, where the run failed (``0`` below the first eps). So the
    bisection only refines between grid points; for an untargeted attack the robust-accuracy
    curve read from its minimal epsilons (:func:`robust_curve`) equals the runs' curve at every
    grid eps (a targeted attack's minimal eps counts reaching the target, its curve any error).
    """
    eps = np.asarray(epsilons, dtype=np.float64)
    order = np.argsort(eps, kind="stable")
    eps, hit = eps[order], np.asarray(success, dtype=bool)[order]
    first = hit.argmax(axis=0)
    any_hit = hit.any(axis=0)
    hi = np.where(any_hit, eps[first], np.inf)
    lo = np.where(any_hit & (first > 0), eps[np.maximum(first - 1, 0)], 0.0)
    return lo, hi


def bisect_minimal_eps(
    attack: Attack,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    max_eps: float,
    iterations: int = 10,
    target: torch.Tensor | None = None,
    bounds: Bounds = Bounds(),
    ctx: AttackContext | None = None,
    bracket: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Per-sample minimal epsilon ``(N,)`` (float64, pixel units of ``attack.norm``) of ``x`` ``(N, C, H, W)``.

    Method ``ray`` (FGSM): one gradient, then bisection along ``clip(x + eps * d)``.
    Method ``bisect`` (BIM/PGD): bisection over the radius, each probe a full run
    of the attack (with its early exit and restarts) at a per-sample radius. ``target``: explicit
    targets for a targeted attack (else its ``target_mode`` decides).
    ``iterations`` bisection steps give a resolution of ``max_eps / 2 ** iterations``.
    ``bracket``: per-sample ``(lo, hi)`` already known from runs on a grid (:func:`grid_bracket`),
    where the bisection starts instead of ``(0, max_eps]``.
    """
    method = method_of(attack)
    ctx = ctx if ctx is not None else AttackContext()
    x = x.detach()
    y = y.to(device=x.device, dtype=torch.long)
    target = attack.targets(model, x, y, target=target, ctx=ctx)
    n = x.shape[0]

    def succeeded(x_adv: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        pred = ctx.logits(model, x_adv).argmax(1)
        return pred == target[rows] if attack.targeted and target is not None else pred != y[rows]

    already = succeeded(x, torch.arange(n, device=x.device))
    if method == "ray":
        if not attack.ray:
            raise AttackError(f"minimal eps: {attack.name!r} declares the ray method but is not a ray attack")
        d = attack.ray_direction(model, x, y, target=target, bounds=bounds, ctx=ctx)

        def success_at(eps: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            radius = eps.view(-1, *([1] * (x.ndim - 1))).to(x.dtype)
            return succeeded((x[rows] + radius * d[rows]).clamp(bounds.low, bounds.high), rows)

    else:
        if not callable(getattr(attack, "attack_radii", None)):
            raise AttackError(f"minimal eps: {attack.name!r} declares bisection but has no attack_radii")
        radius_attack: RadiusAttack = attack  # type: ignore[assignment]
        probe = iter(range(10**9))

        def success_at(eps: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            with attack.gradient_scope(model):  # BPDA mode when the attack runs with bpda: true
                _, ok, _ = radius_attack.attack_radii(
                    model,
                    x[rows],
                    y[rows],
                    eps.to(x.dtype),
                    target=None if target is None else target[rows],
                    bounds=bounds,
                    ctx=ctx,
                    key=("bisect", next(probe)),
                    rows=rows,
                    full_n=n,
                )
            return ok

    radii = bisect_radii(success_at, n, max_eps=max_eps, iterations=iterations, device=x.device, bracket=bracket)
    radii[already] = 0.0
    return radii.cpu().numpy()


def sweep_success(
    samples: pd.DataFrame, data: DataSplit, epsilons: Sequence[float], targets: np.ndarray | None
) -> np.ndarray:
    """``(E, N)``: whether the sweep's example at each eps fooled each sample (``targets``: reached its target).

    ``samples`` holds one block of ``len(data)`` rows per eps of ``epsilons``, in data order.
    """
    adv_pred = samples["adv_pred"].to_numpy().reshape(len(epsilons), len(data))
    if targets is not None:
        return adv_pred == np.asarray(targets)[None, :]
    return adv_pred != data.y.numpy()[None, :]


def robust_curve(min_eps: np.ndarray, clean_correct: np.ndarray, epsilons: Sequence[float]) -> np.ndarray:
    """Robust accuracy at each eps ``(E,)`` read from per-sample minimal epsilons ``(N,)``.

    A sample is robust at eps when it is clean-correct and its minimal
    epsilon is larger than eps.
    """
    eps = np.asarray(epsilons, dtype=float)[:, None]
    robust = clean_correct.astype(bool)[None, :] & (np.asarray(min_eps, dtype=float)[None, :] > eps)
    return robust.mean(axis=1)


def summarize(min_eps: np.ndarray) -> dict[str, float]:
    """Median and quartiles of the distribution (``inf`` where more than that share is never fooled)."""
    values = np.asarray(min_eps, dtype=float)
    if values.size == 0:
        return {"median": float("nan"), "q25": float("nan"), "q75": float("nan"), "never_fooled": float("nan")}
    q25, median, q75 = np.quantile(values, [0.25, 0.5, 0.75], method="lower")
    return {
        "median": float(median),
        "q25": float(q25),
        "q75": float(q75),
        "never_fooled": float(np.isinf(values).mean()),
    }


def add_minimal_eps(
    rows: pd.DataFrame,
    samples: pd.DataFrame,
    *,
    model: nn.Module,
    attack: Attack,
    data: DataSplit,
    epsilons: Sequence[float],
    seed: int,
    device: torch.device,
    batch_size: int,
    iterations: int = 10,
    targets: np.ndarray | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, float | int]]:
    """A cell's result rows and per-sample flags with ``median_min_eps`` and ``min_eps`` columns added.

    ``max_eps`` is the largest grid eps, so the curve read from ``min_eps``
    covers the grid. ``samples`` holds one block of ``len(data)`` rows per
    eps, in data order (as :func:`bench.engine.runner.tidy` writes it). For the
    ``bisect`` method the bisection starts from the sweep's bracket (:func:`grid_bracket`):
    it refines between grid points only, and (untargeted) the curve read from ``min_eps``
    is the sweep's curve at every grid eps. Returns the
    distribution summary and the gradients spent, for the cell's extras.
    ``targets``: the per-sample target classes the sweep used (targeted
    attacks), so that ``min_eps`` describes the same targets as the flags.
    """
    max_eps = max(epsilons)
    values = np.full(len(data), np.inf)
    ctx = AttackContext()
    # Bisection methods start from the sweep's own bracket (its runs at the grid eps are real attack runs);
    # the ray method's probes are forward passes along one direction, cheap from (0, max_eps].
    bracket = (
        grid_bracket(epsilons, sweep_success(samples, data, epsilons, targets))
        if method_of(attack) == "bisect"
        else None
    )
    if max_eps > 0:
        for start in range(0, len(data), batch_size):
            stop = min(start + batch_size, len(data))
            ctx.seed = derive_seed(seed, "minimal_eps", start)
            values[start:stop] = bisect_minimal_eps(
                attack,
                model,
                data.x[start:stop].to(device),
                data.y[start:stop].to(device),
                max_eps=max_eps,
                iterations=iterations,
                bounds=data.bounds,
                ctx=ctx,
                target=None if targets is None else torch.as_tensor(targets[start:stop], device=device),
                bracket=None if bracket is None else (bracket[0][start:stop], bracket[1][start:stop]),
            )
    summary = summarize(values)
    rows = rows.assign(median_min_eps=summary["median"])
    samples = samples.assign(min_eps=np.tile(values, len(samples) // max(1, len(data))))
    return rows, samples, {**summary, "max_eps": float(max_eps), "grad_evals": ctx.grad_evals}
