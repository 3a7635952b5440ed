"""``--set key=value``: change a suite field from the command line, before validation.

``--set dataset.n=200`` or ``--set models.lenet.recipe.epochs=1``: the key is a
dotted path into the suite mapping as read from YAML (includes merged); a list
element is addressed by its ``label`` or ``name`` (``models.lenet``,
``attacks.pgd``) or by its index (``attacks.0``); a model or attack written as a
bare name (``models: [mlp, lenet]``) becomes ``{name: ...}`` when addressed.
The value is parsed with ``yaml.safe_load`` (``1`` is an int, ``[0, 0.1]`` a
list, ``true`` a bool, ``8/255`` a string). The overridden mapping is then
validated like the file, so a wrong value gets the same field-path error.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from bench.suite import SuiteError


def parse(item: str) -> tuple[list[str], Any]:
    """``"a.b.c=value"`` -> ``(["a", "b", "c"], parsed value)``; a malformed item raises :class:`SuiteError`."""
    key, sep, text = item.partition("=")
    path = key.strip().split(".")
    if not sep or not all(path):
        raise SuiteError(f"--set {item!r}: expected key=value with a dotted key, e.g. dataset.n=200")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError as exc:
        raise SuiteError(f"--set {item!r}: the value is not valid YAML ({str(exc).splitlines()[0]})") from None
    return path, value


def _child(node: Any, part: str, where: str, item: str) -> Any:
    """The element ``part`` of a list: by label/name (bare names become mappings), else by index."""
    for i, element in enumerate(node):
        if element == part:  # a bare name: make it a mapping so that fields can be set on it
            node[i] = {"name": element}
            return node[i]
        if isinstance(element, dict) and part in (element.get("label"), element.get("name")):
            return element
    if part.isdigit() and int(part) < len(node):
        if isinstance(node[int(part)], str):
            node[int(part)] = {"name": node[int(part)]}
        return node[int(part)]
    names = [e if isinstance(e, str) else (e.get("label") or e.get("name")) for e in node if isinstance(e, str | dict)]
    raise SuiteError(f"--set {item!r}: {where} has no element {part!r} (known: {', '.join(map(str, names))})")


def apply(raw: dict[str, Any], items: list[str], *, source: Path | str) -> dict[str, Any]:
    """A copy of ``raw`` with every ``--set`` item applied in order; errors name the suite file and the key."""
    data = copy.deepcopy(raw)
    for item in items:
        try:
            path, value = parse(item)
        except SuiteError as exc:
            raise SuiteError(f"{source}: {exc}") from None
        node: Any = data
        for depth, part in enumerate(path[:-1]):
            where = ".".join(path[:depth]) or "the suite"
            if isinstance(node, list):
                try:
                    node = _child(node, part, where, item)
                except SuiteError as exc:
                    raise SuiteError(f"{source}: {exc}") from None
            elif isinstance(node, dict):
                node = node.setdefault(part, {})
            else:
                raise SuiteError(f"{source}: --set {item!r}: {where} is a {type(node).__name__}, not a mapping")
        last = path[-1]
        if isinstance(node, dict):
            node[last] = value
        elif isinstance(node, list) and last.isdigit() and int(last) < len(node):
            node[int(last)] = value
        else:
            where = ".".join(path[:-1])
            raise SuiteError(f"{source}: --set {item!r}: cannot set {last!r} on {where} ({type(node).__name__})")
    return data
