"""The architecture holds: layer contracts, no import cycles, small modules, a short ``run_suite``, no hidden imports.

The layer order lives in ``pyproject.toml`` (``[tool.importlinter]``) and is checked by the real ``lint-imports``
of the venv (import-linter, a dev dependency), one contract per test so that a failure names the broken rule.
The other checks read the source with :mod:`ast` (and the import graph with grimp, import-linter's own library):

* every module of ``bench``/``model_zoo``/``reports`` is at most :data:`MAX_MODULE_LINES` lines;
* ``run_suite`` reads as a list of named phases: at most :data:`MAX_RUN_SUITE_LINES` lines of body;
* no import cycle anywhere, also between a package's ``__init__`` and its own modules (which
  import-linter's ``acyclic_siblings`` contract does not see);
* a function-level import is allowed only for a heavy optional library in :data:`LAZY_IMPORTS`, with a ``#``
  comment giving the reason; never for a project module (that is how layer violations used to hide).

``LAZY_IMPORTS``: libraries that add seconds to an import (``python -X importtime``, on top of torch and numpy,
on the 2-core CI machine: ART 5.8 s, MLflow 5.2 s, seaborn 5.4 s, matplotlib.pyplot 1.3 s, scikit-learn 4.1 s,
torchvision 5.5 s, scipy.stats 2.3 s) or that are optional extras (dask/distributed, ray), so ``bench --help``,
``bench check`` and the worker processes do not pay for what they do not use. Not allowed: the standard library
(``json``, ``io``, ...) and cheap or always-loaded libraries (numpy, pandas, pydantic, yaml, joblib, requests 0.1 s,
mlxtend.data 3 ms): import them at the top of the module.
"""

from __future__ import annotations

import ast
import io
import re
import subprocess
import sys
import tokenize
import tomllib
from pathlib import Path

import grimp
import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("bench", "model_zoo", "reports")
MAX_MODULE_LINES = 400
MAX_RUN_SUITE_LINES = 80
LAZY_IMPORTS = frozenset(
    {"art", "mlflow", "matplotlib", "seaborn", "scipy", "sklearn", "torchvision"}
    | {"dask", "distributed", "ray"}
    | {"pyautoattack"}  # an optional reference (the autoattack extra): imported only where it is compared with
)
CONFIG = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]


def _modules() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py"))


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO))


@pytest.mark.parametrize("contract", [c["id"] for c in CONFIG["contracts"]])
def test_import_linter_contract(contract: str) -> None:
    """``lint-imports --contract ID`` (the real tool) keeps the contract."""
    exe = Path(sys.executable).with_name("lint-imports")
    assert exe.exists(), f"{exe} is missing: pip install -e '.[dev]' (import-linter)"
    proc = subprocess.run(
        [str(exe), "--no-cache", "--no-logo", "--contract", contract],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]


def test_layers_contract_names_every_module() -> None:
    """Each top-level module of ``bench`` is in exactly one layer (import-linter has no ``exhaustive`` here)."""
    (layers,) = [c["layers"] for c in CONFIG["contracts"] if c["type"] == "layers"]
    declared = [name.strip() for layer in layers for name in layer.split("|")]
    assert len(declared) == len(set(declared)), declared
    bench = REPO / "bench"
    children = {f"bench.{p.stem}" for p in bench.glob("*.py") if p.stem != "__init__"}
    children |= {f"bench.{p.parent.name}" for p in bench.glob("*/__init__.py")}
    assert children <= set(declared), f"not in the layers contract: {sorted(children - set(declared))}"
    assert {"model_zoo", "reports"} <= set(declared)


def test_no_import_cycles() -> None:
    """No module reaches itself through its imports (function-level imports count, ``TYPE_CHECKING`` ones not)."""
    graph = grimp.build_graph(*PACKAGES, cache_dir=None, exclude_type_checking_imports=True)  # as lint-imports
    cycles = set()
    for module in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(module) - {module}):
            chain = graph.find_shortest_chain(importer=imported, imported=module, as_packages=False)
            if chain:
                cycles.add(" -> ".join((module, *chain)))
    assert not cycles, "import cycles:\n" + "\n".join(sorted(cycles))


def test_no_module_over_400_lines() -> None:
    long = {_rel(p): n for p in _modules() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them by responsibility): {long}"


def _functions(tree: ast.AST) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]


def test_run_suite_reads_as_named_phases() -> None:
    """``run_suite``'s body (docstring excluded) is at most about 80 lines."""
    found = [
        (path, fn)
        for path in sorted((REPO / "bench").rglob("*.py"))
        for fn in _functions(ast.parse(path.read_text()))
        if fn.name == "run_suite"
    ]
    assert found, "no run_suite in bench/"
    for path, fn in found:
        body = fn.body[1:] if ast.get_docstring(fn) is not None else fn.body
        lines = fn.end_lineno - body[0].lineno + 1 if body else 0
        assert lines <= MAX_RUN_SUITE_LINES, f"{_rel(path)}:{fn.lineno} run_suite has {lines} lines of body"


def _imported_roots(node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.ImportFrom):
        return ["."] if node.level else [str(node.module).split(".")[0]]
    return [alias.name.split(".")[0] for alias in node.names]


def _comment_lines(source: str) -> set[int]:
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    return {tok.start[0] for tok in tokens if tok.type == tokenize.COMMENT}


def _function_level_imports(path: Path) -> list[tuple[int, list[str], bool]]:
    """``(line, imported top-level names, has a reason comment)`` for each import inside a function.

    The reason is a ``#`` comment on the import's lines or on the line above it; consecutive imports share
    the comment of the first one.
    """
    source = path.read_text()
    comments = _comment_lines(source)
    nodes = {
        node.lineno: node
        for fn in _functions(ast.parse(source))
        for node in ast.walk(fn)
        if isinstance(node, ast.Import | ast.ImportFrom)
    }
    found: list[tuple[int, list[str], bool]] = []
    previous: tuple[int, bool] = (-1, False)  # (last line, has a reason) of the import just above
    for line, node in sorted(nodes.items()):
        end = node.end_lineno or line
        reason = bool(set(range(line - 1, end + 1)) & comments) or (previous[0] == line - 1 and previous[1])
        found.append((line, _imported_roots(node), reason))
        previous = (end, reason)
    return found


def test_no_function_level_imports_of_project_modules() -> None:
    """A layer violation cannot hide in a function body: project modules are imported at the top."""
    hidden = [
        f"{_rel(path)}:{line} imports {', '.join(roots)}"
        for path in _modules()
        for line, roots, _ in _function_level_imports(path)
        if set(roots) & {*PACKAGES, "."}
    ]
    assert not hidden, "function-level imports of project modules:\n" + "\n".join(hidden)


def test_function_level_imports_only_for_heavy_optional_libraries() -> None:
    bad = [
        f"{_rel(path)}:{line} imports {', '.join(roots)}" + ("" if reason else " (without a # reason)")
        for path in _modules()
        for line, roots, reason in _function_level_imports(path)
        if not set(roots) & {*PACKAGES, "."} and (not set(roots) <= LAZY_IMPORTS or not reason)
    ]
    assert not bad, f"function-level imports outside {sorted(LAZY_IMPORTS)} or without a reason:\n" + "\n".join(bad)


def test_architecture_map_names_existing_paths() -> None:
    """Every path ARCHITECTURE.md names in backticks (placeholders aside) exists, so the map follows moves."""
    text = (REPO / "ARCHITECTURE.md").read_text()
    roots = "|".join((*PACKAGES, "tests", "suites", "baselines"))
    paths = {p for p in re.findall(rf"`((?:{roots})/[^`\s]*)`", text) if "<" not in p}
    assert len(paths) > 20, sorted(paths)
    for row in re.findall(r"^\| `([^`]+/)` \|(.*)$", text, flags=re.MULTILINE):  # a layer's files, named bare
        folder, rest = row
        paths |= {folder + name for name in re.findall(r"`([^`/\s]+\.(?:py|j2))`", rest)}
    missing = sorted(p for p in paths if not any(REPO.glob(p.rstrip("/"))))
    assert not missing, f"ARCHITECTURE.md names paths that do not exist: {missing}"
