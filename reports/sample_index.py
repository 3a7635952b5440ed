"""Per-sample flags of a run, split by (model, attack) once per loaded frame.

The summary tables, the leaderboard and the comparison look up the same cells many
times; a boolean mask over every row of ``samples.parquet`` each time was most of a
report's table time (73,000 rows for ``suites/attacks_mnist.yaml``).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import pandas as pd


@dataclass
class CellIndex:
    """The per-sample flags of one run split by (model, attack), and each cell's minimal eps once computed."""

    parts: dict[tuple[str, str], pd.DataFrame]
    min_eps: dict[tuple[str, str], pd.Series] = field(default_factory=dict)
    worst: dict[tuple[object, ...], object] = field(default_factory=dict)
    """Per-sample worst cases already computed (``reports.tables``): the summary tables and the
    leaderboard ask for the same (model, attacks, eps grid) rows."""


_LIVE: dict[int, tuple[weakref.ref[pd.DataFrame], CellIndex]] = {}
"""Live samples frames by ``id``: the summary tables, the leaderboard and the comparison look up the
same cells many times (a boolean mask over every row each time was most of a report's table time).
The frames are read, never changed in place, after a run directory is loaded."""


def cell_index(samples: pd.DataFrame) -> CellIndex:
    """The index of this very frame (built on first use, dropped with the frame); the frame must not change."""
    key = id(samples)
    hit = _LIVE.get(key)
    if hit is not None and hit[0]() is samples:
        return hit[1]
    parts = {
        (str(model), str(attack)): part for (model, attack), part in samples.groupby(["model", "attack"], sort=False)
    }
    index = CellIndex(parts)
    _LIVE[key] = (weakref.ref(samples), index)
    weakref.finalize(samples, _LIVE.pop, key, None)
    return index
