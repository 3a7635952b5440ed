"""The suite reference: every field of the pydantic schema with its type, default and description.

Descriptions are the fields' docstrings in :mod:`bench.suite.schema` and :mod:`bench.suite.rules`
(``use_attribute_docstrings``), the recipe's are the ``Args:`` of :class:`model_zoo.training.Recipe`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, get_args, get_origin, get_type_hints

from bench.docgen.markdown import code, docstring_args, table
from bench.suite.schema import Suite
from model_zoo.training import Recipe

SECTIONS: tuple[tuple[str, str | None, str], ...] = (
    ("Top level", None, ""),
    ("`dataset:`", "DatasetSpec", "dataset."),
    ("`models:` entries", "ModelSpec", "models[]."),
    ("`attacks:` entries", "AttackSpec", "attacks[]."),
    ("`certify:` entries", "CertifierSpec", "certify[]."),
    ("`tracking:`", "TrackingSpec", "tracking."),
    ("`checks:` floor rules", "Floor", "checks[]."),
    ("`checks:` tolerance rules", "MaxDrop", "checks[]."),
    ("`checks:` allowed per-sample changes", "AllowFlips", "checks[]."),
)


def _type(prop: dict[str, Any], defs: dict[str, Any]) -> str:
    """A JSON-schema property as words: ``integer > 0``, ```auto` | `cpu``` ..."""
    if "$ref" in prop:
        return "mapping (below)"
    if "anyOf" in prop or "oneOf" in prop:
        options = [p for p in prop.get("anyOf", prop.get("oneOf", [])) if p.get("type") != "null"]
        shown = " or ".join(_type(p, defs) for p in options)
        nullable = any(p.get("type") == "null" for p in prop.get("anyOf", []))
        return shown + (" or null" if nullable else "")
    if "enum" in prop:
        return " | ".join(f"`{v}`" for v in prop["enum"])
    kind = prop.get("type", "any")
    if kind == "array":
        items = prop.get("items", {})
        return "list of " + ("rules (below)" if "oneOf" in items or "discriminator" in items else _type(items, defs))
    if kind == "object":
        return "mapping"
    words = {"integer": "integer", "number": "number", "string": "string", "boolean": "boolean"}.get(kind, kind)
    bounds = []
    for key, sign in (("exclusiveMinimum", ">"), ("minimum", ">="), ("exclusiveMaximum", "<"), ("maximum", "<=")):
        if key in prop and abs(prop[key]) < 2**62:
            bounds.append(f"{sign} {prop[key]:g}")
    if prop.get("minItems"):
        bounds.append(f"at least {prop['minItems']}")
    return words + (" " + ", ".join(bounds) if bounds else "")


def _fields(schema: dict[str, Any], defs: dict[str, Any], prefix: str) -> list[list[str]]:
    required = set(schema.get("required", []))
    rows = []
    for name, prop in schema["properties"].items():
        if name in required:
            default = "required"
        elif "default" in prop:
            default = (
                code(prop["default"])
                if prop["default"] not in ({}, [])
                else ("`{}`" if prop["default"] == {} else "`[]`")
            )
        else:
            default = "(empty)"
        rows.append([f"`{prefix}{name}`", _type(prop, defs), default, prop.get("description", "")])
    return rows


def recipe_reference() -> str:
    """The training recipe's fields (``models[].recipe``)."""
    docs = docstring_args(Recipe.__doc__)
    hints = get_type_hints(Recipe)
    rows = []
    for f in dataclasses.fields(Recipe):
        hint = hints[f.name]
        kind = " | ".join(f"`{a}`" for a in get_args(hint)) if get_origin(hint) is not None else hint.__name__
        rows.append([f"`{f.name}`", kind, code(f.default), docs.get(f.name, "")])
    return table(["field", "type", "default", "meaning"], rows)


def suite_reference() -> str:
    """Every suite field, section by section, from :class:`~bench.suite.schema.Suite`'s JSON schema."""
    schema = Suite.model_json_schema()
    defs = schema.get("$defs", {})
    parts = []
    for title, ref, prefix in SECTIONS:
        body = schema if ref is None else defs[ref]
        parts.append(f"### {title}\n")
        parts.append(table(["field", "type", "default", "meaning"], _fields(body, defs, prefix)))
    parts.append("### `models[].recipe`: the training recipe of a zoo model\n")
    parts.append(recipe_reference())
    return "\n".join(parts)
