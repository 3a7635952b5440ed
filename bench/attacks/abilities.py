"""What an attack declares at registration: its family, ART counterpart, minimal-eps method, boundedness.

The cross-check (:mod:`bench.crosscheck`), the minimal-eps bisection
(:mod:`bench.minimal_eps`), suite validation and the run manifest (read by the
report's sanity flags) all read these declarations, never a list of names::

    @ATTACKS.register("fgsm", abilities=Abilities(family=AttackFamily.ONE_STEP, art=..., minimal_eps="ray"))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from bench.types import AttackFamily

if TYPE_CHECKING:  # the contract imports nothing from here at run time
    from bench.attacks.base import Attack

MinimalEpsMethod = Literal["ray", "bisect"]
"""``ray``: one direction serves every eps, bisect along it (FGSM-like, needs :attr:`Attack.ray`);
``bisect``: bisect the radius, each probe a run at per-sample radii (BIM/PGD-like, needs ``attack_radii``)."""

ArtMap = Callable[["Attack", float], tuple[str, dict[str, Any]]]
"""``(attack, eps) -> (ART evasion class name, ART options)``; ``eps`` itself is set by the adapter."""


def _never(attack: Attack) -> bool:
    return False


@dataclass(frozen=True, kw_only=True)
class ArtCounterpart:
    """How an attack maps onto ART and how the cross-check judges the pair.

    Attributes:
        to_art: the parameter mapping at one eps.
        description: the mapping in words (shown by ``bench ls`` and the docs).
        tolerance: max ``|native - ART|`` (pixels) allowed for a deterministic configuration.
        require_label_agreement: a deterministic configuration must also give the same labels.
        pair_params: hyperparameters of the default cross-check pairs (besides ``norm``, ``targeted``).
        forced_params: hyperparameters every cross-check sets (e.g. no early exit: ART has none).
        random_pair_params: when set, one more untargeted pair per norm with these parameters,
            judged by a paired test (random starts draw from different generators).
        stochastic: whether a configuration draws random starts (then judged by the paired test).
        in_default_matrix: ``False`` leaves the attack out of ``bench crosscheck``'s default matrix
            (too slow there, e.g. an ensemble against ART's ``AutoAttack``); a suite's own
            cross-check (``crosscheck: true``) still compares it.
    """

    to_art: ArtMap
    description: str
    tolerance: float
    require_label_agreement: bool = False
    pair_params: Mapping[str, Any] = field(default_factory=dict)
    forced_params: Mapping[str, Any] = field(default_factory=dict)
    random_pair_params: Mapping[str, Any] | None = None
    stochastic: Callable[[Attack], bool] = _never
    in_default_matrix: bool = True


@dataclass(frozen=True, kw_only=True)
class Abilities:
    """An attack's declaration.

    Attributes:
        family: what the report's sanity flags compare (see :class:`~bench.types.AttackFamily`).
        art: its ART counterpart, or ``None`` with ``no_art`` saying why.
        no_art: why there is no ART counterpart (required when ``art`` is ``None``).
        minimal_eps: how its per-sample minimal eps is found, or ``None`` (not available).
        bounded: eps bounds the perturbation (``False``: eps is ignored, e.g. synthesis).
            An instance with norm ``none`` is unbounded whatever the class declares.
        reproducible: given equal weights, inputs and seed, its per-sample results were measured identical
            across runs, torch thread counts and CPU instruction sets (docs/models.md, "Reference weights"); the
            regression gate then fails on any per-sample change when the weights equal the baseline's.
    """

    family: AttackFamily
    art: ArtCounterpart | None = None
    no_art: str = ""
    minimal_eps: MinimalEpsMethod | None = None
    bounded: bool = True
    reproducible: bool = False

    def __post_init__(self) -> None:
        if (self.art is None) == (not self.no_art):
            raise ValueError("declare either an ART counterpart (art=...) or why there is none (no_art=...)")
        if self.minimal_eps not in (None, "ray", "bisect"):
            raise ValueError(f"minimal_eps must be 'ray', 'bisect' or None, got {self.minimal_eps!r}")

    @property
    def art_mapping(self) -> str:
        """The ART mapping in words, or why there is none."""
        return self.art.description if self.art is not None else f"none: {self.no_art}"
