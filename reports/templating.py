"""The report templates' jinja2 environment and its filters: numbers, eps, p-values, intervals, Markdown cells."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd

TEMPLATES = Path(__file__).parent / "templates"


def environment() -> jinja2.Environment:
    """The jinja2 environment of the report templates, with the number-formatting filters."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
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
