"""The ``ATTACKS`` registry: attack classes with their declared :class:`~bench.attacks.abilities.Abilities`.

Kept apart from ``__init__`` so attack modules can import it. Every attack
registers with its declaration::

    @ATTACKS.register("pgd", abilities=Abilities(family=AttackFamily.ITERATIVE, ...))

A namespace (``"art:"``) registers a whole open-ended family at once: a class,
a factory that builds an instance from the namespaced name, and one declaration.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from bench.attacks.abilities import Abilities
from bench.attacks.base import Attack, AttackError
from bench.registry import Registry, RegistryError

AttackFactory = Callable[..., Attack]
"""``factory(name, **params) -> Attack`` for a namespaced name such as ``"art:DeepFool"``."""


class AttackRegistry(Registry[type[Attack]]):
    """Registry of attack classes and their declarations.

    ``@dataclass`` gives every subclass its own field-by-field ``__repr__``;
    registration restores the contract's ``name(param=value, ...)`` identity
    (with norms as plain strings); a class that wants its own uses
    ``@dataclass(repr=False)`` and defines ``__repr__``. Registration also sets
    the class's ``name`` and ``abilities``.
    """

    def __init__(self, kind: str) -> None:
        super().__init__(kind, plugins=True)  # a suite may name a trusted "module:Class" attack
        self._factories: dict[str, tuple[AttackFactory, Abilities]] = {}

    def register(  # type: ignore[override]
        self,
        name: str,
        obj: Any = None,
        *,
        abilities: Abilities,
        description: str | None = None,
        **meta: Any,
    ) -> Any:
        """Register an :class:`Attack` subclass under ``name`` with its declaration (decorator without ``obj``)."""
        if not isinstance(abilities, Abilities):
            raise RegistryError(f"attack {name!r}: abilities must be an Abilities declaration")

        def add(cls: type[Attack]) -> type[Attack]:
            if not (isinstance(cls, type) and issubclass(cls, Attack)):
                raise RegistryError(f"attack {name!r} is not an Attack subclass")
            params = getattr(cls, "__dataclass_params__", None)
            if params is not None and params.repr:  # the generated one, not a hand-written repr
                cls.__repr__ = Attack.__repr__  # type: ignore[method-assign]
            cls.name = name
            cls.abilities = abilities
            return Registry.register(self, name, cls, description=description, abilities=abilities, **meta)

        return add if obj is None else add(obj)

    def register_attack_namespace(
        self,
        prefix: str,
        cls: type[Attack],
        *,
        make: AttackFactory,
        validate: Callable[[str], None],
        abilities: Abilities,
    ) -> None:
        """Names ``prefix + X`` resolve to ``cls`` (after ``validate(name)``), built by ``make(name, **params)``."""
        cls.abilities = abilities

        def resolve(name: str) -> type[Attack]:
            validate(name)
            return cls

        self.register_namespace(prefix, resolve)
        self._factories[prefix] = (make, abilities)

    def abilities(self, name: str) -> Abilities:
        """The declaration of the attack registered (or namespaced) as ``name``."""
        prefix = self.namespace_of(name)
        if prefix is not None:
            return self._factories[prefix][1]
        declared = self.get(name).abilities
        if declared is None:
            raise RegistryError(f"attack {name!r} declares no abilities")
        return declared

    def declaring(self, predicate: Callable[[Abilities], bool]) -> list[str]:
        """Registered names whose declaration satisfies ``predicate``, in registration order."""
        return [name for name in self.registration_order() if predicate(self.abilities(name))]

    def make(self, name: str, **params: Any) -> Attack:
        """Instantiate ``name`` with keyword hyperparameters; unknown parameters name the allowed ones."""
        prefix = self.namespace_of(name)
        if prefix is not None:
            return self._factories[prefix][0](name, **params)
        cls = self.get(name)
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


ATTACKS: AttackRegistry = AttackRegistry("attack")


def make_attack(name: str, **params: Any) -> Attack:
    """Instantiate the registered (or namespaced, e.g. ``"art:DeepFool"``) attack ``name``.

    Unknown parameters raise :class:`AttackError` naming the allowed ones.
    """
    return ATTACKS.make(name, **params)


def attack_record(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """What a run directory's manifest records about one attack (JSON-able).

    Keys: ``name``, ``family``, ``norm``, ``targeted``, ``bounded``,
    ``art_counterpart`` (the ART mapping in words, or why there is none) and
    ``minimal_eps`` (the method, or ``None``) and ``reproducible`` (per-sample results equal across machines on
    equal weights: the gate's exactness rule). Reports read ``family`` for the sanity flags.
    """
    attack = make_attack(name, **params)
    declared = ATTACKS.abilities(name)
    return {
        "name": name,
        "family": declared.family.value,
        "norm": attack.norm.value,
        "targeted": bool(attack.targeted),
        "bounded": bool(attack.bounded),
        "art_counterpart": declared.art_mapping,
        "minimal_eps": declared.minimal_eps,
        "reproducible": declared.reproducible,
    }
