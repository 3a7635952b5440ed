"""BIM and PGD: one family of projected gradient attacks, two registrations that differ only in defaults.

* ``bim`` (Kurakin et al., 2017): FGSM repeated with a small step from the clean input,
  clipped and projected onto the eps ball after each step.
* ``pgd`` (Madry et al., 2018): the same steps from a seeded random point of the eps ball,
  best of ``restarts`` runs.

The algorithm and every hyperparameter live in
:class:`~bench.attacks.iterative.IterativeGradientAttack` (whose defaults are BIM's);
PGD states only the defaults it changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from bench.attacks.abilities import Abilities, ArtCounterpart
from bench.attacks.base import Attack
from bench.attacks.iterative import IterativeGradientAttack
from bench.attacks.registry import ATTACKS
from bench.types import AttackFamily, Norm

ITERATIVE_TOLERANCE = 1e-5
"""Max ``|native - ART|`` of a BIM/PGD pair without random start (pixels), with 100% label agreement."""

CROSSCHECK_PARAMS = {"steps": 10, "rel_step_size": 0.25, "random_start": False, "early_stop": False}
"""Hyperparameters of the default cross-check pairs: ten steps of a quarter eps, no random start, no early exit."""


def _art_common(attack: Attack, eps: float) -> dict[str, Any]:
    assert isinstance(attack, IterativeGradientAttack)
    step = float(attack.step_size_for(torch.tensor([float(eps)], dtype=torch.float64))[0])
    return {"eps_step": step, "max_iter": int(attack.steps), "targeted": attack.targeted}


def pgd_to_art(attack: Attack, eps: float) -> tuple[str, dict[str, Any]]:
    """ART's ``ProjectedGradientDescent`` with our step, steps, targeting and random restarts."""
    assert isinstance(attack, IterativeGradientAttack)
    restarts = int(attack.restarts) if attack.random_start else 0
    return "ProjectedGradientDescent", {
        **_art_common(attack, eps),
        "norm": attack.norm.value,
        "num_random_init": restarts,
    }


def bim_to_art(attack: Attack, eps: float) -> tuple[str, dict[str, Any]]:
    """ART's ``BasicIterativeMethod`` (linf, no random start); else PGD (ART's BIM is linf only)."""
    assert isinstance(attack, IterativeGradientAttack)
    if attack.norm is Norm.LINF and not attack.random_start:
        return "BasicIterativeMethod", _art_common(attack, eps)
    return pgd_to_art(attack, eps)


def _random_start(attack: Attack) -> bool:
    return isinstance(attack, IterativeGradientAttack) and attack.random_start


@ATTACKS.register(
    "bim",
    abilities=Abilities(
        family=AttackFamily.ITERATIVE,
        art=ArtCounterpart(
            to_art=bim_to_art,
            description=(
                "linf: BasicIterativeMethod(eps=eps, eps_step=step_size or rel_step_size * eps, max_iter=steps, "
                "targeted=targeted); l2: ProjectedGradientDescent(norm=2, same, num_random_init=0). "
                "Identical updates when early_stop=False (ART has no early exit)."
            ),
            tolerance=ITERATIVE_TOLERANCE,
            require_label_agreement=True,
            pair_params=CROSSCHECK_PARAMS,
            forced_params={"early_stop": False},
            stochastic=_random_start,
        ),
        minimal_eps="bisect",
    ),
)
@dataclass(frozen=True, kw_only=True)
class BIM(IterativeGradientAttack):
    """Basic iterative method: ``steps`` FGSM steps from the clean input, clipped and projected after each.

    Shapes and ranges: ``x`` ``(N, C, H, W)`` in the data bounds (pixel
    units, normally [0, 1]); ``eps`` and ``step_size`` in pixel units of ``norm``.

    Args:
        norm: "linf" (default; Kurakin's BIM) or "l2".
        targeted: descend the cross-entropy of a target class instead of ascending the label's.
        target_mode: "random" (default), "least_likely" (Kurakin's iterative least-likely class) or "given".
        steps: iterations (default 10).
        step_size: absolute step (pixel units); default ``None`` = ``rel_step_size * eps``.
        rel_step_size: step as a fraction of eps (default 0.15: ten steps travel 1.5 eps).
        random_start: default ``False`` (BIM starts at the clean input; ``pgd`` is BIM with a random start).
        restarts: runs with fresh random starts (default 1; > 1 needs ``random_start``).
        early_stop: stop a sample once fooled or on target (default ``True``).

    Cost: at most ``steps`` gradients per sample and eps, fewer with early
    exit; sweep-aware (a sample fooled at a smaller eps is not attacked again).
    """


@ATTACKS.register(
    "pgd",
    abilities=Abilities(
        family=AttackFamily.ITERATIVE,
        art=ArtCounterpart(
            to_art=pgd_to_art,
            description=(
                "ProjectedGradientDescent(norm=np.inf|2, eps=eps, eps_step=step_size or rel_step_size * eps, "
                "max_iter=steps, targeted=targeted, num_random_init=restarts if random_start else 0). "
                "Identical updates when random_start=False and early_stop=False (random starts draw from our "
                "seeded generator, ART's from NumPy's global one; ART has no early exit)."
            ),
            tolerance=ITERATIVE_TOLERANCE,
            require_label_agreement=True,
            pair_params=CROSSCHECK_PARAMS,
            forced_params={"early_stop": False},
            random_pair_params={**CROSSCHECK_PARAMS, "random_start": True},
            stochastic=_random_start,
        ),
        minimal_eps="bisect",
        reproducible=True,  # docs/models.md "Reference weights": identical across runs and 1/2 threads, equal numerics
    ),
)
@dataclass(frozen=True, kw_only=True)
class PGD(IterativeGradientAttack):
    """Projected gradient descent in linf or l2, from a seeded random start, best of ``restarts`` runs.

    Shapes and ranges: ``x`` ``(N, C, H, W)`` in the data bounds (pixel
    units, normally [0, 1]); ``eps`` and ``step_size`` in pixel units of ``norm``.

    Args:
        norm: "linf" (default) or "l2".
        targeted: descend the cross-entropy of a target class instead of ascending the label's.
        target_mode: "random" (default), "least_likely" or "given".
        steps: iterations per restart (default 40).
        step_size: absolute step (pixel units); default ``None`` = ``rel_step_size * eps``.
        rel_step_size: step as a fraction of eps (default 0.0625 = Madry et al.'s ``2.5 * eps / steps`` for 40 steps).
        random_start: start at a seeded uniform point of the eps ball (default ``True``).
        restarts: runs with fresh random starts (default 1); later runs re-attack only still-robust samples.
        early_stop: stop a sample once fooled or on target (default ``True``).

    Cost: at most ``steps * restarts`` gradients per sample and eps, fewer with
    early exit; sweep-aware (a sample fooled at a smaller eps is not attacked again).
    """

    steps: int = 40
    rel_step_size: float = 0.0625
    random_start: bool = True
