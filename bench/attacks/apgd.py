"""APGD (Croce & Hein, ICML 2020): auto projected gradient descent, ``apgd`` (CE or DLR) and ``apgd_t`` (targeted DLR).

One run of ``steps`` iterations from a seeded random start of the eps ball (losses
and checkpoints in :mod:`bench.attacks.apgd_loss`)::

    z       = P(x_k + eta * d(grad f(x_k)))               d: sign (linf) or grad / ||grad||_2 (l2)
    x_{k+1} = P(x_k + a (z - x_k) + (1 - a)(x_k - x_{k-1}))   a = momentum (0.75); a = 1 for the first step

``P`` projects onto the eps ball around the clean input and clips to the data bounds.
The step ``eta`` starts at ``2 * eps``; at each checkpoint ``w_j`` it is halved for the
samples where (1) the loss increased in fewer than ``rho * (w_j - w_{j-1})`` of the
iterations since the last checkpoint, or (2) the step was not halved at the last
checkpoint and the best loss has not improved since; those samples restart from their
best point (and its predecessor, for the momentum). A run costs ``steps`` gradients and
one forward pass per sample: the loss of each new point comes with its gradient.

The result per sample is the first point that fooled the model (with ``early_stop`` the
sample stops there), else the point of highest loss. Later ``restarts`` re-attack only the
samples still robust. ``apgd_t`` (AutoAttack's APGD-T) attacks the still-robust samples
with the targeted DLR loss toward their 2nd, 3rd, ... most likely clean class in turn.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from bench.attacks.abilities import Abilities, ArtCounterpart
from bench.attacks.apgd_loss import (
    LOSSES,
    LossFn,
    check_classes,
    checkpoint_update,
    checkpoints,
    col,
    direction,
    initial_state,
    loss_and_gradient,
    loss_function,
    project,
    uniform_radius,
)
from bench.attacks.base import Attack, AttackContext, AttackError, Extras, SweepSteps, TargetedAttack
from bench.attacks.context import check_count
from bench.attacks.iterative import random_unit_start
from bench.attacks.registry import ATTACKS
from bench.types import AttackFamily, Bounds, Norm, eps_label

CROSSCHECK_PARAMS = {"steps": 20}
"""Hyperparameters of the default cross-check pairs (the budget kept small; every APGD pair is judged by McNemar)."""


@dataclass(frozen=True, kw_only=True)
class _APGDCore(Attack):
    """Hyperparameters and algorithm shared by ``apgd`` and ``apgd_t`` (module docstring)."""

    pooled: ClassVar[bool] = True

    steps: int = 100
    restarts: int = 1
    rho: float = 0.75
    momentum: float = 0.75
    early_stop: bool = True

    @classmethod
    def allowed_norms(cls) -> tuple[Norm, ...]:
        return (Norm.LINF, Norm.L2)

    def check_params(self) -> None:
        for field_name in ("steps", "restarts"):
            check_count(self.name, field_name, getattr(self, field_name))
        for field_name in ("rho", "momentum"):
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
                raise AttackError(f"{self.name}: {field_name} must be a number in (0, 1], got {value!r}")
        if not isinstance(self.early_stop, bool):
            raise AttackError(f"{self.name}: early_stop must be true or false, got {self.early_stop!r}")

    # -- what each registration decides ----------------------------------------------
    def _passes(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, ctx: AttackContext
    ) -> Iterator[tuple[tuple[object, ...], LossFn, torch.Tensor | None]]:
        """``(key, loss, targets)`` of each pass over the still-robust samples."""
        raise NotImplementedError

    def _fooled(self, pred: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        return pred != y

    # -- one radius per sample -------------------------------------------------------
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
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Attack each sample of ``x`` ``(n, C, H, W)`` within its radius ``eps`` ``(n,)``; ``(x_adv, success, steps)``.

        ``rows``: positions in a batch of ``full_n``; random starts are drawn for the full
        batch and indexed, so a sample gets the same start in whichever subset it is attacked.
        """
        n = x.shape[0]
        best = x.clone()
        success = torch.zeros(n, dtype=torch.bool, device=x.device)
        steps_used = torch.zeros(n, dtype=torch.long, device=x.device)
        first = True
        for pass_key, loss_fn, pass_target in self._passes(model, x, y, target, ctx):
            for restart in range(self.restarts):
                todo = (~success).nonzero().squeeze(1)
                if todo.numel() == 0:
                    return best, success, steps_used
                full_shape = torch.Size((full_n if rows is not None and full_n else n, *x.shape[1:]))
                unit = random_unit_start(full_shape, self.norm, ctx, *key, *pass_key, restart).to(x.device, x.dtype)
                unit = unit[rows[todo]] if rows is not None else unit[todo]
                x_todo, eps_todo = x[todo], eps[todo]
                start = (x_todo + unit * col(eps_todo, x.ndim)).clamp(bounds.low, bounds.high)
                adv, ok, used = self._single_run(
                    model,
                    x_todo,
                    start,
                    y[todo],
                    None if pass_target is None else pass_target[todo],
                    eps_todo,
                    loss_fn=loss_fn,
                    bounds=bounds,
                    ctx=ctx,
                )
                steps_used[todo] += used
                if first:  # the first run keeps its highest-loss point for every sample it does not fool
                    best[todo] = adv
                    first = False
                else:
                    best[todo[ok]] = adv[ok]
                success[todo] |= ok
        return best, success, steps_used

    def _single_run(
        self,
        model: nn.Module,
        x0: torch.Tensor,
        start: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        eps: torch.Tensor,
        *,
        loss_fn: LossFn,
        bounds: Bounds,
        ctx: AttackContext,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One APGD run from ``start``; returns ``(x_adv, success, steps_used)`` (module docstring)."""
        n, ndim = x0.shape[0], x0.ndim
        out = torch.empty_like(x0)
        success = torch.zeros(n, dtype=torch.bool, device=x0.device)
        used = torch.zeros(n, dtype=torch.long, device=x0.device)
        grad, loss, logits = loss_and_gradient(model, start, y, target, loss_fn, ctx, gradient=True)
        assert grad is not None
        s = initial_state(x0, start, y, target, eps, grad, loss)
        marks = checkpoints(self.steps)
        interval = {w: w - prev for prev, w in itertools.pairwise(marks)}
        radius = uniform_radius(eps)  # every eps equal (a sweep): stays so as samples stop
        taken = 0
        while True:
            fooled = self._fooled(logits.argmax(1), s["y"], s["t"])
            new = fooled & ~success[s["idx"]]
            if bool(new.any()):  # keep the first point that fooled the model
                rows = s["idx"][new]
                out[rows], success[rows], used[rows] = s["x"][new], True, taken
            if self.early_stop and bool(fooled.any()):
                keep = ~fooled
                s = {k: (None if v is None else v[keep]) for k, v in s.items()}
                if s["idx"].numel() == 0:
                    break
            if taken == self.steps:
                break
            x, x0a = s["x"], s["x0"]
            z = project(
                x + col(s["step"], ndim) * direction(s["grad"], self.norm),
                x0a,
                s["eps"],
                self.norm,
                bounds,
                radius=radius,
            )
            if taken > 0:
                a = float(self.momentum)
                z = project(
                    x + a * (z - x) + (1 - a) * (x - s["x_prev"]), x0a, s["eps"], self.norm, bounds, radius=radius
                )
            s["x_prev"], s["x"] = x, z
            taken += 1
            last = taken == self.steps
            grad, loss, logits = loss_and_gradient(model, z, s["y"], s["t"], loss_fn, ctx, gradient=not last)
            s["count"] += loss > s["loss"]
            s["loss"] = loss
            better = loss > s["f_max"]
            s["f_max"] = torch.where(better, loss, s["f_max"])
            s["x_max"][better] = z[better]
            s["x_max_prev"][better] = x[better]
            if grad is not None:
                s["grad"] = grad
                s["grad_max"][better] = grad[better]
            if taken in interval and not last:
                checkpoint_update(s, interval[taken], float(self.rho))
        if s["idx"].numel():
            rest = ~success[s["idx"]]
            out[s["idx"][rest]] = s["x_max"][rest]
            used[s["idx"][rest]] = taken
        return out, success, used

    # -- the contract ------------------------------------------------------------------
    def run_sweep(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        epsilons: Sequence[float],
        *,
        target: torch.Tensor | None,
        bounds: Bounds,
        ctx: AttackContext,
    ) -> SweepSteps:
        """Sweep-aware: ascending eps, each attacking only the samples no smaller eps has fooled.

        Epsilons not given in ascending order are computed ascending and yielded in the
        order given. Returns extras: ``mean_steps`` and ``attacked`` per eps label.
        """
        best = x.clone()
        fooled = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        results: dict[float, torch.Tensor] = {}
        extras: Extras = {"mean_steps": {}, "attacked": {}}
        for eps in sorted(set(epsilons)):
            rows = (~fooled).nonzero().squeeze(1)
            if eps > 0 and rows.numel():
                radii = torch.full((rows.numel(),), float(eps), dtype=x.dtype, device=x.device)
                adv, ok, used = self.attack_radii(
                    model,
                    x[rows],
                    y[rows],
                    radii,
                    target=None if target is None else target[rows],
                    bounds=bounds,
                    ctx=ctx,
                    key=(float(eps),),
                    rows=rows,
                    full_n=x.shape[0],
                )
                best[rows] = adv
                fooled[rows] = ok
                extras["mean_steps"][eps_label(eps)] = float(used.float().mean())
                extras["attacked"][eps_label(eps)] = int(rows.numel())
            results[eps] = best.clone()
        for eps in epsilons:
            yield eps, results[eps]
        return extras


def apgd_to_art(attack: Attack, eps: float) -> tuple[str, dict[str, Any]]:
    """ART's ``AutoProjectedGradientDescent`` at the same budget (ART fixes rho and the momentum at 0.75)."""
    assert isinstance(attack, APGD)
    return "AutoProjectedGradientDescent", {
        "norm": attack.norm.value,
        "eps_step": 2 * float(eps),
        "max_iter": int(attack.steps),
        "targeted": bool(attack.targeted),
        "nb_random_init": int(attack.restarts),
        "loss_type": "cross_entropy" if attack.loss == "ce" else "difference_logits_ratio",
    }


def _always(attack: Attack) -> bool:
    return True


@ATTACKS.register(
    "apgd",
    abilities=Abilities(
        family=AttackFamily.ITERATIVE,
        art=ArtCounterpart(
            to_art=apgd_to_art,
            description=(
                "AutoProjectedGradientDescent(norm=np.inf|2, eps=eps, eps_step=2*eps, max_iter=steps, "
                "targeted=targeted, nb_random_init=restarts, loss_type='cross_entropy' (loss ce) or "
                "'difference_logits_ratio' (loss dlr)). Random starts differ (ours seeded): judged by the "
                "paired McNemar test."
            ),
            tolerance=0.0,
            pair_params=CROSSCHECK_PARAMS,
            forced_params={"early_stop": False},
            stochastic=_always,
            in_default_matrix=False,  # every pair is random: a suite's cross-check and tests/test_apgd.py judge it
        ),
    ),
)
@dataclass(frozen=True, kw_only=True)
class APGD(_APGDCore, TargetedAttack):
    """APGD with the cross-entropy (APGD-CE, default) or the DLR loss, untargeted or toward given targets.

    Shapes and ranges: ``x`` ``(N, C, H, W)`` in the data bounds (pixel units,
    normally [0, 1]); ``eps`` in pixel units of ``norm``.

    Args:
        norm: "linf" (default) or "l2".
        loss: "ce" (default) or "dlr" (needs >= 3 classes; targeted >= 4).
        targeted: drive samples to a target class (``target_mode`` "random", "least_likely" or "given").
        steps: iterations per run (default 100); the step starts at ``2 * eps``.
        restarts: runs from fresh seeded random starts (default 1); later runs re-attack only still-robust samples.
        rho: checkpoint condition 1 threshold (default 0.75).
        momentum: weight of the new step, ``a`` in the paper (default 0.75).
        early_stop: a sample stops at its first fooling (or on-target) point, kept as its example (default True).

    Cost: at most ``steps * restarts`` gradients per sample and eps; sweep-aware.
    """

    loss: str = "ce"

    def check_params(self) -> None:
        super().check_params()
        if self.loss not in LOSSES:
            raise AttackError(f"{self.name}: loss {self.loss!r} is not allowed (allowed: {', '.join(LOSSES)})")

    def _passes(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, ctx: AttackContext
    ) -> Iterator[tuple[tuple[object, ...], LossFn, torch.Tensor | None]]:
        if self.loss == "dlr" and x.shape[0]:
            check_classes(self.name, self.loss, ctx.logits(model, x[:1]), targeted=self.targeted)
        targets = target if self.targeted else None
        yield (), loss_function(self.loss, targeted=targets is not None), targets

    def _fooled(self, pred: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        return pred == target if target is not None else pred != y


@ATTACKS.register(
    "apgd_t",
    abilities=Abilities(
        family=AttackFamily.ITERATIVE,
        no_art=(
            "ART's AutoProjectedGradientDescent attacks one given target; apgd_t (an untargeted attack) loops "
            "over the top n_target_classes classes (tests/test_apgd.py checks one pass against ART's targeted APGD)"
        ),
    ),
)
@dataclass(frozen=True, kw_only=True)
class APGDT(_APGDCore):
    """AutoAttack's APGD-T: targeted DLR toward the 2nd, 3rd, ... most likely clean class in turn (untargeted goal).

    Shapes and ranges: ``x`` ``(N, C, H, W)`` in the data bounds (pixel units,
    normally [0, 1]); ``eps`` in pixel units of ``norm``; the model needs >= 4 classes.

    Args:
        norm: "linf" (default) or "l2".
        n_target_classes: target classes tried per sample (default 9, at most classes - 1),
            each pass attacking only the samples every earlier pass failed on.
        steps: iterations per run (default 100); the step starts at ``2 * eps``.
        restarts: runs per target class from fresh seeded random starts (default 1).
        rho: checkpoint condition 1 threshold (default 0.75).
        momentum: weight of the new step (default 0.75).
        early_stop: a sample stops at its first misclassified point, kept as its example (default True).

    Cost: at most ``steps * restarts * n_target_classes`` gradients per sample and eps; sweep-aware.
    """

    n_target_classes: int = 9

    def check_params(self) -> None:
        super().check_params()
        check_count(self.name, "n_target_classes", self.n_target_classes)

    def _passes(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, ctx: AttackContext
    ) -> Iterator[tuple[tuple[object, ...], LossFn, torch.Tensor | None]]:
        if x.shape[0] == 0:
            return
        clean = ctx.logits(model, x)
        check_classes(self.name, "dlr", clean, targeted=True)
        ranked = clean.argsort(dim=1, descending=True)
        for rank in range(1, min(self.n_target_classes, clean.shape[1] - 1) + 1):
            yield ("target", rank), loss_function("dlr", targeted=True), ranked[:, rank].contiguous()
