"""Attacks, one family per module, registered in :data:`ATTACKS` with what each can do.

Importing this package registers every built-in attack (in this order, which
fixes the order of the cross-check matrix) and the ``art:`` namespace. A suite
may also name an explicit plugin class as ``"package.module:Class"``.

Adding an attack is one module plus its registration::

    @ATTACKS.register("my_attack", abilities=Abilities(family=AttackFamily.ITERATIVE, no_art="..."))
    @dataclass(frozen=True, kw_only=True)
    class MyAttack(Attack):
        def run(self, model, x, y, eps, *, target, bounds, ctx): ...
"""

from __future__ import annotations

from bench.attacks import adversarial_noise as _adversarial_noise  # noqa: F401  (registers)
from bench.attacks import art as _art  # noqa: F401  (registers the art: namespace; ART itself loads lazily)
from bench.attacks import fgsm as _fgsm  # noqa: F401  (registers first: the cross-check matrix's order)
from bench.attacks import fooling_images as _fooling_images  # noqa: F401  (registers)
from bench.attacks import noise as _noise  # noqa: F401  (registers uniform_noise, gaussian_noise, salt_pepper)
from bench.attacks import occlusion as _occlusion  # noqa: F401  (registers)
from bench.attacks import pgd as _pgd  # noqa: F401  (registers bim, pgd)

from bench.attacks import apgd as _apgd  # noqa: F401  # isort: skip  (after pgd: the matrix's order)
from bench.attacks import reliable as _reliable  # noqa: F401  (registers; after its members: apgd, the art: namespace)
from bench.attacks import square as _square  # noqa: F401  (registers square, a member of reliable)
from bench.attacks import targeted_ascent as _targeted_ascent  # noqa: F401  (registers)
from bench.attacks.abilities import Abilities, ArtCounterpart, MinimalEpsMethod
from bench.attacks.base import Attack, AttackContext, AttackError, Ray, Sweep, TargetedAttack, derive_seed
from bench.attacks.geometry import perturbation_norms, project
from bench.attacks.registry import ATTACKS, attack_record, make_attack

__all__ = [
    "ATTACKS",
    "Abilities",
    "ArtCounterpart",
    "Attack",
    "AttackContext",
    "AttackError",
    "MinimalEpsMethod",
    "Ray",
    "Sweep",
    "TargetedAttack",
    "attack_record",
    "derive_seed",
    "make_attack",
    "perturbation_norms",
    "project",
]
