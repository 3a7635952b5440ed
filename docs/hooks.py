"""MkDocs hook: the reference parts of the pages are generated from the code while the site builds.

A line ``<!-- bench:generate NAME [ARG] -->`` in a page is replaced by :func:`bench.docgen.expand`
(the suite schema, the attack registry, the CLI, a ``bench perf`` JSON file, ...), so those tables
cannot drift from the code. The scaling figure of the performance page is drawn from the same JSON.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File

from bench.docgen import expand
from bench.docgen.perf_ref import read_perf
from bench.perf.scaling import scaling_figure

ROOT = Path(__file__).resolve().parent.parent
PERF_JSON = ROOT / "docs" / "perf" / "perf-2026-12-03.json"
FIGURE = "img/generated/perf_scaling.png"


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    return expand(markdown, page=f"docs/{page.file.src_uri}", root=ROOT)


def on_files(files: Any, config: Any) -> Any:
    folder = Path(tempfile.mkdtemp(prefix="bench-docs-"))
    path = scaling_figure(read_perf(PERF_JSON)["scaling"], folder / "perf_scaling.png")
    files.append(File.generated(config, FIGURE, abs_src_path=str(path)))
    return files
