"""The report templates' jinja2 environment and its filters: numbers, eps, p-values, intervals, Markdown cells."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd

TEMPLATES = Path(__file__).parent / "templates"


class TemplateCache(jinja2.FileSystemBytecodeCache):
    """jinja2's on-disk cache of compiled templates, where a broken cache is only a cache miss.

    Compiling the two report templates costs about 0.2 s in every process that renders a
    report; a cached compilation loads in a few milliseconds. An entry that cannot be read
    (jinja2 already recompiles a truncated entry or another Python's) is compiled again, and
    one that cannot be written (full or read-only disk) is skipped: the report never fails
    because of its cache.
    """

    def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        try:
            super().load_bytecode(bucket)
        except OSError:
            bucket.reset()

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        with contextlib.suppress(OSError):
            super().dump_bytecode(bucket)


def template_cache(directory: Path | None = None) -> TemplateCache | None:
    """The compiled-template cache in ``directory``, by default jinja2's own per-user folder.

    That folder (``<tmp>/_jinja2-cache-<uid>``) is created private (mode 0700) and refused when
    another user owns it or can write to it: compiled templates are code, so they are never
    read from a shared folder such as a team's checkpoint cache. ``None`` (no cache, templates
    compiled each time) when no safe folder is available.
    """
    try:
        if directory is not None:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        return TemplateCache(None if directory is None else str(directory))
    except (RuntimeError, OSError):
        return None


def environment(*, cache: jinja2.BytecodeCache | None = None) -> jinja2.Environment:
    """The jinja2 environment of the report templates, with the number-formatting filters.

    ``cache``: where compiled templates are kept between processes (default :func:`template_cache`).
    """
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        bytecode_cache=cache if cache is not None else template_cache(),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "html.j2"), default_for_string=False),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(num=_num, eps=_eps, signed=_signed, pvalue=_pvalue, mdcell=_mdcell, interval=_interval)
    return env


def _num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return "–"
    return f"{float(value):.{digits}f}"


def _eps(value: Any, digits: int = 6) -> str:
    value = float(value)
    return "∞" if math.isinf(value) else f"{value:.{digits}g}"


def _signed(value: Any) -> str:
    return f"{float(value):+.3f}"


def _pvalue(value: Any) -> str:
    if value is None or value is pd.NA or math.isnan(float(value)):
        return "–"
    return f"{float(value):.2g}" if value < 0.001 else f"{float(value):.3f}"


def _interval(value: Any) -> str:
    return f"{value.value:.3f} [{value.low:.3f}, {value.high:.3f}]"


def _mdcell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")
