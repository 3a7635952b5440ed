"""The catalog behind ``bench ls``: registered data sets, models, attacks and certifiers as JSON, from the registries.

``bench ls`` must not import torch (it reads ``catalog.json`` next to this
file); this module builds that file from the live registries, and
tests/test_cli_habits.py checks that the file equals :func:`build`, so it
cannot drift. Regenerate after adding a data set, model, attack or certifier::

    python -m bench.cli.catalog
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

from bench.attacks import ATTACKS, AttackError, make_attack
from bench.certify import CERTIFIERS, certifier_abilities
from bench.data import DATASETS
from bench.types import Norm
from model_zoo import MODELS

PATH = Path(__file__).with_name("catalog.json")
_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")


def plain(text: str) -> str:
    """A docstring line without reStructuredText quoting (````x```` and ``:class:`x``` become ``x``)."""
    return _ROLE.sub(r"\1", text).replace("``", "")


def _jsonable(value: Any) -> Any:
    if isinstance(value, Norm):
        return value.value
    if isinstance(value, tuple):
        return list(value)
    return value if isinstance(value, str | int | float | bool | list | dict | type(None)) else repr(value)


def _attack(name: str) -> dict[str, Any]:
    cls = ATTACKS.get(name)
    fields = [f for f in dataclasses.fields(cls) if f.init]
    params = {
        f.name: _jsonable(f.default if f.default is not dataclasses.MISSING else None)
        for f in fields
        if f.name != "norm"
    }
    default = make_attack(name)
    norms = [default.norm.value]
    if any(f.name == "norm" for f in fields):
        for norm in Norm:
            if norm.value in norms:
                continue
            try:
                make_attack(name, norm=norm.value)
            except (AttackError, ValueError, TypeError):
                continue
            norms.append(norm.value)
    return {"description": plain(ATTACKS.describe(name)), "norms": norms, "params": params}


def _certifier(name: str) -> dict[str, Any]:
    cls = CERTIFIERS.get(name)
    params = {f.name: _jsonable(f.default) for f in dataclasses.fields(cls) if f.init and f.name != "norm"}
    first = plain((cls.__doc__ or "").strip().split("\n\n")[0].replace("\n", " "))
    return {
        "description": first,
        "norms": [n.value for n in cls.norms],
        "kind": certifier_abilities(name).kind,
        "params": params,
    }


def build() -> dict[str, Any]:
    """The catalog from the live registries (sorted names)."""
    return {
        "datasets": {name: {"description": plain(DATASETS.describe(name))} for name in DATASETS.names()},
        "models": {name: {"description": plain(MODELS.describe(name))} for name in MODELS.names()},
        "attacks": {name: _attack(name) for name in ATTACKS.names()},
        "certifiers": {name: _certifier(name) for name in CERTIFIERS.names()},
    }


def dumps(catalog: dict[str, Any]) -> str:
    return json.dumps(catalog, indent=1, sort_keys=True) + "\n"


if __name__ == "__main__":  # pragma: no cover - the generator
    PATH.write_text(dumps(build()), encoding="utf-8")
    print(f"wrote {PATH}")
