"""Small Markdown builders shared by the generators."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any


def cell(text: Any) -> str:
    """One table cell: pipes escaped, newlines folded."""
    return " ".join(str(text).split()).replace("|", "\\|")


def code(value: Any) -> str:
    """An inline code span of ``value`` as YAML would show it (``null``, ``true``, strings bare)."""
    if value is None:
        shown = "null"
    elif isinstance(value, bool):
        shown = "true" if value else "false"
    elif value == "":
        shown = '""'
    elif isinstance(value, float) and value == int(value) and abs(value) < 1e15:
        shown = f"{value:.1f}"
    else:
        shown = str(value)
    return f"`{shown}`"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def docstring_args(doc: str | None) -> dict[str, str]:
    """The ``Args:`` (or ``Attributes:``) section of a Google-style docstring: name -> description (one line)."""
    out: dict[str, str] = {}
    if not doc:
        return out
    lines = doc.expandtabs().splitlines()
    inside, indent, current = False, 0, ""
    for line in lines:
        stripped = line.strip()
        if stripped in ("Args:", "Attributes:", "Fields every attack has:"):
            inside, indent, current = True, len(line) - len(line.lstrip()), ""
            continue
        if not inside:
            continue
        if not stripped:
            inside = False
            continue
        depth = len(line) - len(line.lstrip())
        if depth <= indent:
            inside = False
            continue
        name, sep, rest = stripped.partition(":")
        if sep and name.isidentifier() and depth == indent + 4:
            current = name
            out[current] = rest.strip()
        elif current:
            out[current] += " " + stripped
    return {k: plain_rst(v) for k, v in out.items()}


def plain_rst(text: str) -> str:
    """reStructuredText roles and double backticks as Markdown code spans."""
    text = re.sub(r":[a-z]+:`~?([^`]+)`", lambda m: f"`{m.group(1).rsplit('.', 1)[-1]}`", text)
    return text.replace("``", "`")
