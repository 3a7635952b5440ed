"""Certification cells in a baseline: the bracket's lower side under the same gate as the attacks.

A suite with ``certify:`` freezes each (model, certifier) cell like an attack cell (``kind: certified``): per eps
the certified count and the per-sample certificates as flags, so ``bench check`` applies floors and tolerances
(``metric: certified``) and, with the same weights, compares certificates sample by sample.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from bench.certified import read_certified, read_certified_samples
from bench.rundir import RunDir

if TYPE_CHECKING:
    from bench.gate.baseline import CellRecord


def certified_cells(
    run: RunDir, indices: np.ndarray, with_flags: bool, make_record: Callable[..., CellRecord]
) -> list[CellRecord]:
    """A ``kind: certified`` record per (model, certifier) of the run's certified tables that covers every sample
    (a certifier given a smaller ``n`` is left out of the gate), its flags the certificates; ``make_record`` is
    the baseline's record builder (called like for an attack cell)."""
    certified, per_sample = read_certified(run), read_certified_samples(run)
    if certified is None or per_sample is None:
        return []
    cells = []
    for (model, certifier), rows in certified.groupby(["model", "certifier"], sort=False):
        rows = rows.sort_values("eps")
        mine = per_sample[(per_sample["model"] == model) & (per_sample["certifier"] == certifier)]
        epsilons = [float(e) for e in rows["eps"]]
        flags = np.zeros((len(epsilons), len(indices)), dtype=bool)
        covered = True
        for i, eps in enumerate(epsilons):
            group = mine[mine["eps"] == eps].sort_values("index")
            if not np.array_equal(group["index"].to_numpy(), indices):
                covered = False
                break
            flags[i] = group["certified"].to_numpy(dtype=bool)
        if not covered:
            continue
        as_attack = rows.assign(
            attack_name=rows["certifier_name"], attack_params=rows["certifier_params"], targeted=False
        )
        # certifiers are deterministic (smoothing's noise is seeded per sample block): same weights, same flags
        record = make_record(str(model), str(certifier), as_attack, epsilons, flags, indices, with_flags, True)
        cells.append(record.model_copy(update={"kind": "certified"}))
    return cells
