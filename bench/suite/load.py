"""Reading suite files: YAML (safe loader only), ``include:`` chains, relative weight paths.

A suite may ``include:`` other suite files (paths relative to the including
file); included mappings are merged key by key, the including file winning,
and lists are replaced whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from bench import limits
from bench.suite.schema import Suite, SuiteError
from bench.suite.validate import validate


class _CappedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with caps: nesting depth, alias uses and the node count after alias expansion.

    An alias is composed as a reference to the same node, so a "billion laughs"
    file is small in memory here and explodes later, when the suite is validated;
    the expanded count is computed on the node graph (memoized) and refused first.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > limits.YAML_ALIASES:
                raise limits.LimitError(f"more than {limits.YAML_ALIASES} alias uses (*name)")
        self._depth += 1
        try:
            if self._depth > limits.YAML_DEPTH:
                raise limits.LimitError(f"nested deeper than {limits.YAML_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self) -> Any:
        node = super().compose_document()
        expanded = _expanded_size(node, {})
        if expanded > limits.YAML_NODES:
            raise limits.LimitError(f"expands to more than {limits.YAML_NODES} YAML nodes (aliases counted)")
        return node


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """Nodes in ``node``'s tree with every alias expanded, computed on the shared graph (memoized)."""
    key = id(node)
    if key in memo:
        return memo[key]
    memo[key] = limits.YAML_NODES + 1  # a cycle (recursive alias) counts as too large
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(child, memo) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    else:
        size = 1
    memo[key] = min(size, limits.YAML_NODES + 1)
    return memo[key]


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
        text = limits.read_text_capped(path, limits.SUITE_FILE_BYTES, what="suite file")
    except FileNotFoundError:
        raise SuiteError(f"{path}: suite file not found") from None
    except limits.LimitError as exc:
        raise SuiteError(str(exc)) from None
    except OSError as exc:
        raise SuiteError(f"{path}: cannot read suite file ({exc.strerror or exc})") from None
    loader = None
    try:
        loader = _CappedLoader(text)  # the reader refuses control characters here already
        return loader.get_single_data()
    except limits.LimitError as exc:
        raise SuiteError(f"{path}: YAML {exc}") from None
    except RecursionError:
        raise SuiteError(f"{path}: YAML nested too deeply") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SuiteError(f"{path}: invalid YAML{where}: {problem}") from None
    finally:
        if loader is not None:
            loader.dispose()


def load_raw(path: Path, _stack: tuple[Path, ...] = (), _read: list[int] | None = None) -> dict[str, Any]:
    """Read a suite file and resolve its ``include:`` chain into one mapping."""
    path = Path(path)
    real = path.resolve()
    _read = [0] if _read is None else _read
    _read[0] += 1
    if _read[0] > limits.INCLUDE_FILES:
        raise SuiteError(f"{path}: include: more than {limits.INCLUDE_FILES} suite files read for one suite")
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
        if not inc_path.is_file():
            raise SuiteError(f"{path}: include: {inc!r} is not a regular file (a folder, device or FIFO)")
        merged = _merge(merged, load_raw(inc_path, (*_stack, real), _read))
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


def load_suite(path: str | Path, *, trust: Sequence[str] = ()) -> Suite:
    """Read, merge includes and validate a suite file.

    ``factory:`` modules must be trusted: the zoo, modules under the suite file's
    own folder, ``$BENCH_TRUSTED_MODULES`` and ``trust`` (``--trust``).
    """
    path = Path(path)
    return validate(load_raw(path), source=path, base=path.parent, trust=trust)


def dump_yaml(data: dict[str, Any]) -> str:
    """``data`` as YAML that loads back equal: readable Unicode where PyYAML round-trips it, else escaped.

    PyYAML writes some characters raw that its reader then takes for line breaks (NEL, U+0085,
    in a description becomes a space); escaping every non-ASCII character keeps them.
    """
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    if yaml.safe_load(text) == data:
        return text
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=False)
