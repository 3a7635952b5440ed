"""A small typed registry: register by decorator or lazily by ``"module:attr"``.

Modelled on lm-evaluation-harness' registry: duplicate names raise, unknown
names raise with "did you mean" suggestions, and every entry carries a one-line
description for ``bench ls``.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class RegistryError(LookupError):
    """Raised for duplicate or unknown registry names and bad plugin strings."""


@dataclass
class _Entry(Generic[T]):
    name: str
    description: str
    obj: T | None = None
    target: str | None = None  # "module:attr" for lazy entries
    meta: dict[str, Any] = field(default_factory=dict)


def import_object(target: str) -> Any:
    """Import ``"package.module:attr"`` (``attr`` may be dotted).

    Only explicit ``module:attr`` strings are accepted: this is the one way
    plugin code enters the harness.
    """
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise RegistryError(f"plugin {target!r} must have the form 'package.module:attr'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise RegistryError(f"plugin {target!r}: cannot import module {module_name!r}: {exc}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise RegistryError(f"plugin {target!r}: module {module_name!r} has no attribute {attr!r}") from exc
    return obj


def first_doc_line(obj: Any) -> str:
    doc = getattr(obj, "__doc__", None) or ""
    return doc.strip().splitlines()[0].strip() if doc.strip() else ""


class Registry(Generic[T]):
    """Named objects of one kind (data sets, models, attacks).

    >>> r: Registry[int] = Registry("number")
    >>> r.register("one", 1, description="the first")
    1
    >>> r.get("one")
    1
    """

    def __init__(self, kind: str, *, plugins: bool = False) -> None:
        self.kind = kind
        self._plugins = plugins  # whether an unregistered "module:attr" names a plugin to import (attacks only)
        self._entries: dict[str, _Entry[T]] = {}
        self._namespaces: dict[str, Callable[[str], T]] = {}

    # -- registration -------------------------------------------------------------
    def register(self, name: str, obj: T | None = None, *, description: str | None = None, **meta: Any) -> Any:
        """Register ``obj`` under ``name``; without ``obj`` return a decorator."""

        def add(target: T) -> T:
            self._add(_Entry(name, description or first_doc_line(target), obj=target, meta=meta))
            return target

        if obj is None:
            return add
        return add(obj)

    def register_lazy(self, name: str, target: str, *, description: str = "", **meta: Any) -> None:
        """Register ``"module:attr"``, imported on first use."""
        if ":" not in target:
            raise RegistryError(f"lazy {self.kind} {name!r}: target {target!r} must be 'module:attr'")
        self._add(_Entry(name, description, target=target, meta=meta))

    def register_namespace(self, prefix: str, resolve: Callable[[str], T]) -> None:
        """Resolve every name starting with ``prefix`` (e.g. ``"art:"``) by ``resolve(name)``.

        ``resolve`` raises for names it does not know. Namespaced names are not
        listed by :meth:`names`: they are open-ended.
        """
        if prefix in self._namespaces:
            raise RegistryError(f"duplicate {self.kind} namespace {prefix!r}: already registered")
        self._namespaces[prefix] = resolve

    def namespace_of(self, name: str) -> str | None:
        """The registered namespace prefix ``name`` starts with, if any."""
        return next((p for p in self._namespaces if name.startswith(p)), None)

    def _add(self, entry: _Entry[T]) -> None:
        if entry.name in self._entries:
            raise RegistryError(f"duplicate {self.kind} name {entry.name!r}: already registered")
        self._entries[entry.name] = entry

    def unregister(self, name: str) -> None:
        """Remove ``name`` (tests register throwaway entries and remove them afterwards)."""
        if name not in self._entries:
            raise RegistryError(self.unknown_message(name))
        del self._entries[name]

    @contextlib.contextmanager
    def registered(self, name: str, obj: T, **kwargs: Any) -> Iterator[T]:
        """``with registry.registered(name, obj): ...``: ``obj`` is registered only inside the block."""
        self.register(name, obj, **kwargs)
        try:
            yield obj
        finally:
            self.unregister(name)

    # -- lookup -------------------------------------------------------------------
    def get(self, name: str) -> T:
        """Return the object registered as ``name``.

        A name of the form ``"module:attr"`` that is not registered is imported directly (an explicit
        plugin) only by a registry made with ``plugins=True`` (attacks; a suite's attack plugin is checked
        to come from a trusted module first). Data sets and models never import: a data set name from a
        run directory's manifest must not run code.
        """
        entry = self._entries.get(name)
        if entry is None:
            prefix = self.namespace_of(name)
            if prefix is not None:
                return self._namespaces[prefix](name)
            if ":" in name and self._plugins:  # callers check the module is trusted first (bench.suite.validate)
                return import_object(name)
            raise RegistryError(self.unknown_message(name))
        if entry.obj is None:
            assert entry.target is not None
            entry.obj = import_object(entry.target)
            if not entry.description:
                entry.description = first_doc_line(entry.obj)
        return entry.obj

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, list(self._entries), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        return f"unknown {self.kind} {name!r}{hint} (known: {', '.join(sorted(self._entries))})"

    def check(self, name: str) -> None:
        """Raise :class:`RegistryError` unless ``name`` is registered, namespaced or a plugin string.

        A namespaced name is resolved (its resolver validates it).
        """
        if name in self._entries:
            return
        if self.namespace_of(name) is not None:
            self.get(name)
        elif ":" not in name or not self._plugins:
            raise RegistryError(self.unknown_message(name))

    def describe(self, name: str) -> str:
        entry = self._entries[name]
        if not entry.description and entry.obj is None:
            self.get(name)
        return entry.description

    def meta(self, name: str) -> dict[str, Any]:
        return dict(self._entries[name].meta)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def registration_order(self) -> list[str]:
        """Names in the order they were registered (stable tables: built-ins first, then plugins)."""
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def items(self) -> Iterator[tuple[str, T]]:
        for name in self.names():
            yield name, self.get(name)


def registering(registry: Registry[T], name: str, **meta: Any) -> Callable[[T], T]:
    """Decorator form usable on classes and functions alike."""
    return registry.register(name, **meta)
