"""The ``ATTACKS`` registry (kept apart from ``__init__`` so attack modules can import it)."""

from __future__ import annotations

from bench.attacks.base import Attack
from bench.registry import Registry

ATTACKS: Registry[type[Attack]] = Registry("attack")
