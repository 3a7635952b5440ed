"""Comparison of runs: a baseline against candidates, per (model, attack, eps), with paired McNemar tests.

When two runs evaluated the same samples (same data digest, same sample
indices in the cell), each sample is a pair of outcomes (robust in the
baseline, robust in the candidate). McNemar's exact test looks only at the
discordant pairs: ``b`` samples robust in the baseline only, ``c`` in the
candidate only; under "no difference" ``b ~ Binomial(b + c, 1/2)``. The
p-values of all cells are then adjusted for multiplicity with
Benjamini-Hochberg (``scipy.stats.false_discovery_control``), and a
difference is marked significant when its adjusted ``q < alpha``.
"""

from __future__ import annotations

import math

import pandas as pd

from bench.stats import McNemar, mcnemar
from reports.sources import RunData

KEY = ["model", "attack", "eps"]


def compare_runs(baseline: RunData, candidate: RunData, *, alpha: float = 0.05) -> pd.DataFrame:
    """Cells present in both runs, side by side.

    Columns: ``model, attack, eps, baseline, candidate, delta`` (candidate minus
    baseline robust accuracy, in [-1, 1]), ``b, c, p_value, q_value, significant``
    (NaN / False where the runs do not share samples), ``paired`` (bool).
    ``alpha``: significance level of the BH-adjusted q-values (default 0.05).
    """
    left = baseline.results[[*KEY, "robust_accuracy"]].rename(columns={"robust_accuracy": "baseline"})
    right = candidate.results[[*KEY, "robust_accuracy"]].rename(columns={"robust_accuracy": "candidate"})
    table = left.merge(right, on=KEY, how="inner", sort=False)
    table["delta"] = table["candidate"] - table["baseline"]
    same_data = baseline.digest is not None and baseline.digest == candidate.digest
    paired = same_data and baseline.samples is not None and candidate.samples is not None
    tests: list[McNemar | None] = []
    if paired:
        assert baseline.samples is not None and candidate.samples is not None
        base_groups = baseline.samples.groupby(KEY, sort=False)
        cand_groups = candidate.samples.groupby(KEY, sort=False)
        base_keys, cand_keys = set(base_groups.groups), set(cand_groups.groups)
        for key in table[KEY].itertuples(index=False, name=None):
            if key not in base_keys or key not in cand_keys:
                tests.append(None)
                continue
            b = base_groups.get_group(key).set_index("index")["correct"]
            c = cand_groups.get_group(key).set_index("index")["correct"]
            if len(b) != len(c) or set(b.index) != set(c.index):
                tests.append(None)
                continue
            tests.append(mcnemar(b.sort_index().to_numpy(), c.sort_index().to_numpy()))
    else:
        tests = [None] * len(table)
    table["paired"] = [t is not None for t in tests]
    table["b"] = [t.b if t else pd.NA for t in tests]
    table["c"] = [t.c if t else pd.NA for t in tests]
    table["p_value"] = [t.p_value if t else math.nan for t in tests]
    table["q_value"] = math.nan
    tested = table["paired"].to_numpy()
    if tested.any():
        from scipy import stats  # heavy (0.6 s): only a comparison of paired runs pays for it

        table.loc[tested, "q_value"] = stats.false_discovery_control(table.loc[tested, "p_value"].to_numpy())
    table["significant"] = table["q_value"].lt(alpha) & table["paired"]
    return table.reset_index(drop=True)
