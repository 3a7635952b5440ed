"""Reference pages of the documentation site, generated from the code so that they cannot drift.

The site's Markdown sources (``docs/``) hold markers such as ``<!-- bench:generate attacks -->``;
the MkDocs hook ``docs/hooks.py`` replaces each one with :func:`generate`'s Markdown while the
site builds. Every generator reads the live registries, the pydantic schema, the typer app or a
``bench perf`` JSON file, never a copy of them:

==================  ==========================================================================
``suite-fields``    the suite schema (:mod:`bench.docgen.suite_ref`), with the recipe and gate rules
``attacks``         every registered attack: norms, parameters with defaults, ART counterpart, ...
``certifiers``      every registered certifier: norms, kind, layers it bounds, parameters, ART counterpart
``datasets``        the registered data sets
``zoo``             the zoo's models, their recipes and recorded reference weights
``cli``             every ``bench`` command with its options (from the typer app)
``perf PATH``       the tables of a ``bench perf --json`` file (:mod:`bench.docgen.perf_ref`)
``limits``          the caps on amounts of work (:mod:`bench.limits`)
==================  ==========================================================================
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from bench.docgen import cli_ref, limits_ref, perf_ref, registry_ref, suite_ref

MARKER = re.compile(r"^<!-- bench:generate ([a-z-]+)(?: ([^ ]+))? -->$", re.M)
"""A line ``<!-- bench:generate NAME [ARG] -->`` of a docs page, replaced by the generated Markdown."""

GENERATORS: dict[str, Callable[[str | None, Path], str]] = {
    "suite-fields": lambda arg, root: suite_ref.suite_reference(),
    "attacks": lambda arg, root: registry_ref.attacks_reference(),
    "certifiers": lambda arg, root: registry_ref.certifiers_reference(),
    "datasets": lambda arg, root: registry_ref.datasets_reference(),
    "zoo": lambda arg, root: registry_ref.zoo_reference(),
    "cli": lambda arg, root: cli_ref.cli_reference(),
    "perf": lambda arg, root: perf_ref.perf_reference(root / str(arg)),
    "limits": lambda arg, root: limits_ref.limits_reference(),
}


class DocgenError(ValueError):
    """A marker naming no generator, or a generator's missing input; the message names the page."""


def expand(markdown: str, *, page: str, root: Path) -> str:
    """``markdown`` with every marker replaced; ``root`` is the repository (a marker's path argument is under it)."""

    def one(match: re.Match[str]) -> str:
        name, arg = match.group(1), match.group(2)
        if name not in GENERATORS:
            raise DocgenError(f"{page}: unknown generator {name!r} (allowed: {', '.join(sorted(GENERATORS))})")
        if name == "perf" and arg is None:
            raise DocgenError(f"{page}: the perf generator needs the JSON file: <!-- bench:generate perf PATH -->")
        return GENERATORS[name](arg, root).rstrip("\n")

    return MARKER.sub(one, markdown)
