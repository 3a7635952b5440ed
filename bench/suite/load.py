"""Reading suite files: YAML (safe loader only), ``include:`` chains, relative weight paths.

A suite may ``include:`` other suite files (paths relative to the including
file); included mappings are merged key by key, the including file winning,
and lists are replaced whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from bench.suite.schema import Suite, SuiteError
from bench.suite.validate import validate


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml(path: Path) -> Any:
    """``yaml.safe_load`` a file, turning errors into :class:`SuiteError` with line and column."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SuiteError(f"{path}: suite file not found") from None
    except OSError as exc:
        raise SuiteError(f"{path}: cannot read suite file ({exc.strerror})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SuiteError(f"{path}: invalid YAML{where}: {problem}") from None


def load_raw(path: Path, _stack: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a suite file and resolve its ``include:`` chain into one mapping."""
    path = Path(path)
    real = path.resolve()
    if real in _stack:
        chain = " -> ".join(str(p) for p in (*_stack, real))
        raise SuiteError(f"{path}: include cycle ({chain})")
    data = read_yaml(path)
    if data is None:
        raise SuiteError(f"{path}: the suite file is empty")
    if not isinstance(data, dict):
        raise SuiteError(f"{path}: a suite must be a mapping of fields, got {type(data).__name__}")
    _resolve_weights(data, path.parent)
    includes = data.pop("include", None)
    if includes is None:
        return data
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        raise SuiteError(f"{path}: include: must be a file name or a list of file names")
    merged: dict[str, Any] = {}
    for inc in includes:
        inc_path = (path.parent / inc) if not Path(inc).is_absolute() else Path(inc)
        if not inc_path.exists():
            raise SuiteError(f"{path}: include: file {inc!r} not found (looked at {inc_path})")
        merged = _merge(merged, load_raw(inc_path, (*_stack, real)))
    return _merge(merged, data)


def _resolve_weights(data: dict[str, Any], base: Path) -> None:
    """Make relative ``models[*].weights`` paths relative to the suite file that names them."""
    models = data.get("models")
    if not isinstance(models, list):
        return
    for model in models:
        if isinstance(model, dict) and isinstance(model.get("weights"), str):
            weights = Path(model["weights"]).expanduser()
            model["weights"] = str(weights if weights.is_absolute() else (base / weights).resolve())


def load_suite(path: str | Path) -> Suite:
    """Read, merge includes and validate a suite file."""
    path = Path(path)
    return validate(load_raw(path), source=path)


def dump_yaml(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
