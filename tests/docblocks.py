"""The fenced code blocks of the README and the documentation site, and what the test run does with each.

Conventions (docs/contributing.md, "Examples that run"):

* ``bash``/``sh`` and ``python`` blocks run, page by page, in order, in a fresh folder per page;
* a block with ``title="PATH"`` is a file: it is written to PATH in that folder, not run;
* HTML comments on the lines before a block say otherwise:
  ``<!-- example: not run: REASON -->`` (shown only; the reason is required),
  ``<!-- example: slow -->`` (runs under ``pytest -m slow`` only),
  ``<!-- example: exit N -->`` (a shell block must exit with status N),
  ``<!-- example: output -->`` on a ``text`` block (every line of it must be in what the last block printed);
* other languages (``yaml``, ``text``, ``json``, ...) are shown, not run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RUNNABLE = {"bash": "shell", "sh": "shell", "python": "python", "py": "python"}
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,})(?P<info>[^`\n]*)$")
DIRECTIVE = re.compile(r"^\s*<!-- example: (?P<what>not run: .+|slow|exit \d+|output) -->\s*$")


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    language: str
    title: str | None
    code: str
    directives: tuple[str, ...]

    @property
    def kind(self) -> str:
        """``file``, ``shell``, ``python`` or ``shown``."""
        if self.title:
            return "file"
        return RUNNABLE.get(self.language, "shown")

    @property
    def skipped(self) -> str | None:
        """The reason a runnable block is not run, if it says so."""
        return next((d[len("not run: ") :] for d in self.directives if d.startswith("not run: ")), None)

    @property
    def output(self) -> bool:
        """A ``text`` block that shows what the block before it printed (checked line by line)."""
        return "output" in self.directives

    @property
    def slow(self) -> bool:
        return "slow" in self.directives

    @property
    def expected_exit(self) -> int:
        return next((int(d.split()[1]) for d in self.directives if d.startswith("exit ")), 0)

    def where(self) -> str:
        return f"{self.page}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """Every fenced block of one Markdown file, with the directive on the line before it."""
    page = str(path.relative_to(REPO))
    lines = path.read_text(encoding="utf-8").splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence, info = match.group("indent"), match.group("fence"), match.group("info").strip()
        language = info.split()[0] if info else ""
        title = re.search(r'title="([^"]+)"', info)
        body: list[str] = []
        j = i + 1
        while j < len(lines) and lines[j].strip() != fence:
            body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j].lstrip())
            j += 1
        directives: list[str] = []
        k = i - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        while k >= 0 and (found := DIRECTIVE.match(lines[k])):
            directives.insert(0, found.group("what"))
            k -= 1
        out.append(
            Block(
                page=page,
                line=i + 1,
                language=language,
                title=title.group(1) if title else None,
                code="\n".join(body) + "\n",
                directives=tuple(directives),
            )
        )
        i = j + 1
    return out


def pages() -> list[Path]:
    """The README and every page of the site."""
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
