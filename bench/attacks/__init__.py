"""Native attacks, one per module, registered in :data:`ATTACKS`.

Importing this package registers every built-in attack. A suite may also name
an explicit plugin class as ``"package.module:Class"``.
"""

from __future__ import annotations

from typing import Any

from bench.attacks import adversarial_noise as _adversarial_noise  # noqa: F401  (registers)
from bench.attacks import bim as _bim  # noqa: F401  (registers)
from bench.attacks import fgsm as _fgsm  # noqa: F401  (registers)
from bench.attacks import fooling_images as _fooling_images  # noqa: F401  (registers)
from bench.attacks import gaussian_noise as _gaussian_noise  # noqa: F401  (registers)
from bench.attacks import occlusion as _occlusion  # noqa: F401  (registers)
from bench.attacks import pgd as _pgd  # noqa: F401  (registers)
from bench.attacks import salt_pepper as _salt_pepper  # noqa: F401  (registers)
from bench.attacks import targeted_ascent as _targeted_ascent  # noqa: F401  (registers)
from bench.attacks import uniform_noise as _uniform_noise  # noqa: F401  (registers)
from bench.attacks.base import Attack, AttackContext, AttackError, perturbation_norms, project
from bench.attacks.registry import ATTACKS


def make_attack(name: str, **params: Any) -> Attack:
    """Instantiate the registered attack ``name`` with keyword hyperparameters.

    Unknown parameters raise :class:`AttackError` naming the allowed ones.
    """
    import dataclasses

    if name.startswith("art:"):  # any ART evasion attack, through the PyTorchClassifier adapter
        from bench.attacks.art import make_art_attack

        return make_art_attack(name, **params)
    cls = ATTACKS.get(name)
    if not (isinstance(cls, type) and issubclass(cls, Attack)):
        raise AttackError(f"attack {name!r} is not an Attack subclass")
    allowed = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise AttackError(
            f"attack {name!r} has no parameter {', '.join(repr(u) for u in unknown)} "
            f"(allowed: {', '.join(sorted(allowed))})"
        )
    try:
        return cls(**params)
    except TypeError as exc:
        raise AttackError(f"attack {name!r}: {exc}") from None


__all__ = ["ATTACKS", "Attack", "AttackContext", "AttackError", "make_attack", "perturbation_norms", "project"]
