"""One formatter for pydantic validation errors: ``<source>: <field path>: <message>`` lines.

Every file the harness validates (suite, baseline, gate rules on the command
line) reports its errors through :func:`describe_validation_error`, so they all
read alike: ``suites/x.yaml: attacks[1].params: unknown field``.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError

TOP_LEVEL = "(top level)"


def field_path(loc: Sequence[int | str], *, root: Sequence[int | str] = ()) -> str:
    """A pydantic location as a field path: ``("attacks", 1, "params")`` -> ``attacks[1].params``.

    Parts naming pydantic's own validator wrappers (``function-before[...]``,
    from shorthand fields) are left out; ``root`` is put before ``loc``.
    """
    out = ""
    for part in (*root, *loc):
        if isinstance(part, int):
            out += f"[{part}]"
        elif not str(part).startswith("function-"):
            out += ("." if out else "") + str(part)
    return out


_EXPECTED = {  # strict types: no string coercion ("false" is not a boolean, "1_0" not an integer)
    "bool_type": "a boolean (true or false)",
    "int_type": "an integer",
    "float_type": "a number",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
}


def expected_type(what: str, value: object) -> str:
    """``expected an integer, got str '1_0'``: the message of a value of the wrong type."""
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return f"expected {what}, got {type(value).__name__} {shown}"


def _message(error: dict) -> str:  # type: ignore[type-arg]
    msg = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return "unknown field"
    if error["type"] in _EXPECTED:
        return expected_type(_EXPECTED[error["type"]], error.get("input"))
    if error["type"] == "literal_error":
        return msg.replace("Input should be", "allowed values are")
    return msg


def describe_validation_error(
    exc: ValidationError,
    *,
    source: str | None = None,
    root: Sequence[int | str] = (),
    top_level: str | None = TOP_LEVEL,
    first_only: bool = False,
) -> str:
    """One line per error: ``<source>: <path>: <message>`` (``source`` and path left out when empty).

    Args:
        exc: the pydantic error.
        source: the file (or option) the data came from, e.g. ``suites/x.yaml``.
        root: field path of the validated value inside its file, e.g. ``("checks",)``.
        top_level: written as the path of an error without a location (a model-level check);
            ``None`` leaves the path out (such checks name their field in the message).
        first_only: report the first error only.
    """
    errors = exc.errors(include_url=False)
    lines = []
    for error in errors[:1] if first_only else errors:
        where = field_path(tuple(error["loc"]), root=root) or top_level
        parts = [p for p in (source, where, _message(error)) if p]
        lines.append(": ".join(parts))
    return "\n".join(lines)
