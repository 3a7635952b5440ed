"""Per-sample flags of a run, split by (model, attack) once per loaded frame, and what is computed from them.

The summary tables, the leaderboard and the comparison look up the same cells many
times; a boolean mask over every row of ``samples.parquet`` each time was most of a
report's table time (73,000 rows for ``suites/attacks_mnist.yaml``).

What is computed from the flags (each cell's per-sample minimal eps, the per-sample
worst cases) is kept per *content*: ``bench run`` reads ``samples.parquet`` three times
(its printed summary, the report and the MLflow mirror), and each reading is a new frame
with the same values, so the second and third find the first one's worst cases instead
of computing them again (0.25 s of the mirror's time on ``attacks_mnist``).
"""

from __future__ import annotations

import hashlib
import json
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import pandas as pd


@dataclass
class Computed:
    """What is computed from one content of per-sample flags, shared by every frame holding it."""

    min_eps: dict[tuple[str, str], pd.Series] = field(default_factory=dict)
    worst: dict[tuple[object, ...], object] = field(default_factory=dict)
    """Per-sample worst cases already computed (``reports.tables``): the summary tables and the
    leaderboard ask for the same (model, attacks, eps grid) rows."""


class CellIndex:
    """The per-sample flags of one frame split by (model, attack), and the :class:`Computed` of its content."""

    def __init__(self, samples: pd.DataFrame, computed: Computed) -> None:
        # Split now (copies): the index stays usable after a temporary frame it was built from is gone.
        groups = samples.groupby(["model", "attack"], sort=False)
        self.parts = {(str(model), str(attack)): part for (model, attack), part in groups}
        self.computed = computed

    @property
    def min_eps(self) -> dict[tuple[str, str], pd.Series]:
        return self.computed.min_eps

    @property
    def worst(self) -> dict[tuple[object, ...], object]:
        return self.computed.worst


_LIVE: dict[int, tuple[weakref.ref[pd.DataFrame], CellIndex]] = {}
"""Live samples frames by ``id``. The frames are read, never changed in place, after a run
directory is loaded (a changed copy is a new frame, with its own content digest)."""

_BY_CONTENT: OrderedDict[str, Computed] = OrderedDict()
"""The last :data:`KEEP` contents' computations, by :func:`content_digest`."""

KEEP = 2
"""Contents whose computations outlive their frames: a run's flags, and a baseline's in a comparison."""


def forget_computed() -> None:
    """Drop the computations kept by content (``bench perf`` times a report as its first reading would run)."""
    _BY_CONTENT.clear()


def content_digest(samples: pd.DataFrame) -> str:
    """sha256 of a frame's exact content: its length, column names and dtypes, and every value.

    Numeric and boolean columns are hashed as their bytes; other columns (model and attack
    names) as their codes plus the ``repr`` of each distinct value (``pandas.factorize``). So two
    frames share a digest only when they hold the same values in the same rows (the index is
    ignored): a run directory is untrusted, and a 64-bit row hash such as pandas' can be made
    to collide on purpose. About 13 ms for ``attacks_mnist``'s 73,000 rows.
    """
    digest = hashlib.sha256()
    digest.update(repr((len(samples), [(str(c), str(t)) for c, t in samples.dtypes.items()])).encode())
    for position in range(samples.shape[1]):
        column = samples.iloc[:, position]
        if isinstance(column.dtype, np.dtype) and column.dtype.kind in "biufcmM":
            digest.update(np.ascontiguousarray(column.to_numpy()).tobytes())
        else:
            codes, uniques = pd.factorize(column, use_na_sentinel=True)
            digest.update(np.asarray(codes, dtype=np.int64).tobytes())
            digest.update(json.dumps([repr(value) for value in uniques]).encode())
    return digest.hexdigest()


def cell_index(samples: pd.DataFrame) -> CellIndex:
    """The index of this very frame (built on first use, dropped with the frame); the frame must not change.

    A frame with the same content as one indexed before (the same file read again) shares that
    frame's computations.
    """
    key = id(samples)
    hit = _LIVE.get(key)
    if hit is not None and hit[0]() is samples:
        return hit[1]
    digest = content_digest(samples)
    computed = _BY_CONTENT.pop(digest, None) or Computed()
    _BY_CONTENT[digest] = computed  # most recent last
    while len(_BY_CONTENT) > KEEP:
        _BY_CONTENT.popitem(last=False)
    index = CellIndex(samples, computed)
    _LIVE[key] = (weakref.ref(samples), index)
    weakref.finalize(samples, _LIVE.pop, key, None)
    return index
