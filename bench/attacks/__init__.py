"""Native attacks, one per module, registered in :data:`ATTACKS`.

Importing this package registers every built-in attack. A suite may also name
an explicit plugin class as ``"package.module:Class"``.
"""

from __future__ import annotations

from typing import Any

from bench.attacks import fgsm as _fgsm  # noqa: F401  (registers)
from bench.attacks.base import Attack, AttackContext, AttackError, perturbation_norms, project
from bench.attacks.registry import ATTACKS


def make_attack(name: str, **params: Any) -> Attack:
    """Instantiate the registered attack ``name`` with keyword hyperparameters.

    Unknown parameters raise :class:`AttackError` naming the allowed ones.
    """
    import dataclasses

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
