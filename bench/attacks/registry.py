"""The ``ATTACKS`` registry (kept apart from ``__init__`` so attack modules can import it)."""

from __future__ import annotations

from typing import Any

from bench.attacks.base import Attack
from bench.registry import Registry


class AttackRegistry(Registry[type[Attack]]):
    """Registry of attack classes.

    ``@dataclass`` gives every subclass its own field-by-field ``__repr__``;
    registration restores the contract's ``name(param=value, ...)`` identity
    (with norms as plain strings); a class that wants its own uses
    ``@dataclass(repr=False)`` and defines ``__repr__``.
    """

    def register(self, name: str, obj: Any = None, *, description: str | None = None, **meta: Any) -> Any:
        def add(cls: type[Attack]) -> type[Attack]:
            params = getattr(cls, "__dataclass_params__", None)
            if params is not None and params.repr:  # the generated one, not a hand-written repr
                cls.__repr__ = Attack.__repr__  # type: ignore[method-assign]
            return Registry.register(self, name, cls, description=description, **meta)

        return add if obj is None else add(obj)


ATTACKS: AttackRegistry = AttackRegistry("attack")
