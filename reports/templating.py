"""The report templates' jinja2 environment and its filters: numbers, eps, p-values, intervals, Markdown cells."""

from __future__ import annotations

import contextlib
import hashlib
import math
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd

TEMPLATES = Path(__file__).parent / "templates"


AUTOESCAPED = ("html", "html.j2")
"""Template extensions rendered with HTML escaping."""

SETTINGS: dict[str, Any] = {"trim_blocks": True, "lstrip_blocks": True}
"""The environment's whitespace options (besides autoescaping and ``StrictUndefined``)."""


def settings_key() -> str:
    """What compiled templates depend on besides their text: jinja2's version and the environment's options.

    Part of every cache entry's name, so that a changed option (autoescaping first of all) or
    another jinja2 never loads a template compiled under the old ones (jinja2's own key is the
    template's name, path and text only).
    """
    options = repr((jinja2.__version__, AUTOESCAPED, "StrictUndefined", sorted(SETTINGS.items())))
    return hashlib.sha256(options.encode()).hexdigest()[:16]


class TemplateCache(jinja2.FileSystemBytecodeCache):
    """jinja2's on-disk cache of compiled templates, where a broken cache is only a cache miss.

    Compiling the two report templates costs about 0.2 s in every process that renders a
    report; a cached compilation loads in a few milliseconds. An entry that cannot be read
    (cut short, another Python's, unreadable) is compiled again, and one that cannot be written
    (full or read-only disk) is skipped: the report never fails because of its cache. Entries
    are named by :func:`settings_key` and the template.
    """

    def __init__(self, directory: str | None = None) -> None:
        super().__init__(directory, pattern=f"__bench_report_{settings_key()}_%s.cache")

    def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        try:
            super().load_bytecode(bucket)
        except Exception:  # any unreadable entry (OSError, a cut pickle header ...) is a miss
            bucket.reset()

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        with contextlib.suppress(OSError):
            super().dump_bytecode(bucket)


def template_cache(directory: Path | None = None) -> TemplateCache | None:
    """The compiled-template cache in ``directory`` (tests), by default jinja2's own per-user folder.

    jinja2 creates that folder (``<tmp>/_jinja2-cache-<uid>`` on POSIX) with mode 0700 and refuses
    it when it is a link, not a folder, owned by another user or not private: compiled templates
    are code, so they are never read from a shared folder such as a team's checkpoint cache.
    ``None`` (no cache: templates compiled each time) when no such folder is available.
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
        autoescape=jinja2.select_autoescape(enabled_extensions=AUTOESCAPED, default_for_string=False),
        undefined=jinja2.StrictUndefined,
        **SETTINGS,
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
