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

import numpy as np
import pandas as pd

from bench import stats
from bench.stats import McNemar, mcnemar
from reports.sources import RunData
from reports.tables import common_samples, worst_case_at, worst_case_row

KEY = ["model", "attack", "eps"]


def compare_runs(baseline: RunData, candidate: RunData, *, alpha: float = 0.05) -> pd.DataFrame:
    """Cells present in both runs, side by side.

    Columns: ``model, attack, eps, baseline, candidate, delta`` (candidate minus
    baseline robust accuracy, in [-1, 1]), ``b, c, p_value, q_value, significant``
    (NaN / False where the runs do not share samples), ``paired`` (bool). The report shows
    ``b`` as "robust in baseline only" and ``c`` as "robust in candidate only".
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


def _paired_flags(run: RunData, model: str, attacks: list[str], eps: float) -> pd.Series | None:
    """Per-sample worst-case robust flags (index -> bool) at ``eps`` over ``attacks``, or None without samples."""
    if run.samples is None or run.samples.empty:
        return None
    mine = run.samples[(run.samples["model"] == model) & run.samples["attack"].isin(attacks)]
    mine = common_samples(mine[(mine["eps"] - eps).abs() <= 1e-12])
    return mine.groupby("index")["correct"].all() if not mine.empty else None


def _per_sample_auc(run: RunData, model: str, attacks: list[str], norm: str) -> pd.Series | None:
    """Per-sample reference AUC of the worst-case curve (index -> value in [0, 1]), or None without samples.

    :func:`bench.stats.reference_auc` is linear in the accuracies, so the row's AUC is the
    mean of these per-sample values (each sample's curve is its cumulative worst-case flag
    at every grid eps); a paired test on them tests the AUC delta.
    """
    if run.samples is None or run.samples.empty:
        return None
    mine = run.samples[(run.samples["model"] == model) & run.samples["attack"].isin(attacks)]
    if mine.empty:
        return None
    pointwise = common_samples(mine).groupby(["index", "eps"])["correct"].all().unstack("eps").sort_index(axis=1)
    if pointwise.isna().any().any():  # an eps some attack did not cover: no common curve
        pointwise = pointwise.dropna(axis=1)
    if pointwise.shape[1] == 0:
        return None
    eps = pointwise.columns.to_numpy(dtype=float)
    flags = np.logical_and.accumulate(pointwise.to_numpy(dtype=bool), axis=1).astype(float)
    weights = np.array([stats.reference_auc(eps, np.eye(len(eps))[j], norm).value for j in range(len(eps))])
    return pd.Series(flags @ weights, index=pointwise.index)


def _auc_test(baseline: RunData, candidate: RunData, model: str, attacks: list[str], norm: str) -> float:
    """Two-sided Wilcoxon signed-rank p-value of the paired per-sample AUC differences (nan: not paired)."""
    left = _per_sample_auc(baseline, model, attacks, norm)
    right = _per_sample_auc(candidate, model, attacks, norm)
    if left is None or right is None or set(left.index) != set(right.index):
        return math.nan
    # rounded: the per-sample values are sums of float weights, and a tie or a zero must not
    # become a rank or a non-zero through the last bit
    diff = np.round(right.sort_index().to_numpy() - left.sort_index().to_numpy(), 12)
    if not np.any(diff):
        return 1.0
    from scipy import stats as scipy_stats  # heavy (0.6 s): only a comparison of paired runs pays for it

    return float(scipy_stats.wilcoxon(diff, zero_method="wilcox", alternative="two-sided").pvalue)


def model_summary(baseline: RunData, candidate: RunData, *, alpha: float = 0.05) -> list[dict[str, object]]:
    """Per model and bounded norm: worst-case robust accuracy at the norm's reference eps and reference AUC, both runs.

    The worst case is over the attacks of that norm both runs ran (so the two rows
    compare like with like). Where the runs share samples, an exact two-sided McNemar
    test on the worst-case per-sample flags tests the robust-accuracy delta; the
    p-values are Holm-adjusted over the rows and ``significant`` is ``p_holm < alpha``.
    The AUC delta is tested the same way on the paired per-sample AUCs (two-sided
    Wilcoxon signed-rank test, its own Holm adjustment): ``auc_p_holm``, ``auc_significant``.
    """
    rows: list[dict[str, object]] = []
    same_data = baseline.digest is not None and baseline.digest == candidate.digest
    base, cand = baseline.results, candidate.results
    for (model, norm), part in base[base["norm"] != "none"].groupby(["model", "norm"], sort=False):
        ref_eps = stats.REFERENCE_EPS.get(str(norm))
        other = cand[(cand["model"] == model) & (cand["norm"] == norm)]
        attacks = [a for a in part["attack"].unique() if a in set(other["attack"])]
        if ref_eps is None or not attacks:
            continue
        b_cells, c_cells = part[part["attack"].isin(attacks)], other[other["attack"].isin(attacks)]
        b_worst = worst_case_row(str(model), b_cells, baseline.samples)
        c_worst = worst_case_row(str(model), c_cells, candidate.samples)
        b_acc = worst_case_at(str(model), b_cells, baseline.samples, ref_eps).value
        c_acc = worst_case_at(str(model), c_cells, candidate.samples, ref_eps).value
        test, auc_p = None, math.nan
        if same_data:
            auc_p = _auc_test(baseline, candidate, str(model), attacks, str(norm))
            left = _paired_flags(baseline, str(model), attacks, ref_eps)
            right = _paired_flags(candidate, str(model), attacks, ref_eps)
            if left is not None and right is not None and set(left.index) == set(right.index):
                test = mcnemar(left.sort_index().to_numpy(), right.sort_index().to_numpy())
        rows.append(
            {
                "model": str(model),
                "norm": str(norm),
                "attacks": len(attacks),
                "eps": ref_eps,
                "baseline": b_acc,
                "candidate": c_acc,
                "delta": c_acc - b_acc,
                "baseline_only": test.b if test else None,
                "candidate_only": test.c if test else None,
                "p_value": test.p_value if test else math.nan,
                "auc_baseline": b_worst.auc_reference,
                "auc_candidate": c_worst.auc_reference,
                "auc_delta": c_worst.auc_reference - b_worst.auc_reference,
                "auc_partial": b_worst.auc_partial or c_worst.auc_partial,
                "auc_p_value": auc_p,
            }
        )
    _holm_columns(rows, "p_value", "p_holm", "significant", alpha)
    _holm_columns(rows, "auc_p_value", "auc_p_holm", "auc_significant", alpha)
    return rows


def _holm_columns(rows: list[dict[str, object]], raw: str, adjusted: str, verdict: str, alpha: float) -> None:
    """Holm-adjust the non-nan ``raw`` p-values over the rows into ``adjusted``; ``verdict`` = adjusted < alpha."""
    tested = [i for i, r in enumerate(rows) if not math.isnan(float(r[raw]))]  # type: ignore[arg-type]
    values = stats.holm([float(rows[i][raw]) for i in tested])  # type: ignore[arg-type]
    for r in rows:
        r[adjusted], r[verdict] = math.nan, False
    for i, p in zip(tested, values, strict=True):
        rows[i][adjusted], rows[i][verdict] = p, p < alpha


def differences(baseline: RunData, candidate: RunData) -> list[str]:
    """What differs between the two runs' set-ups (suite, data, seed, model recipes), one line each; [] if nothing."""
    out: list[str] = []
    bm, cm = baseline.manifest, candidate.manifest
    for key, what in (("suite", "suite"), ("suite_digest", "suite file (digest)"), ("seed", "seed")):
        if bm.get(key) != cm.get(key):
            out.append(f"{what}: {bm.get(key)} vs {cm.get(key)}")
    bd, cd = bm.get("data") or {}, cm.get("data") or {}
    for key in ("name", "split", "n", "digest"):
        if bd.get(key) != cd.get(key):
            out.append(f"data {key}: {bd.get(key)} vs {cd.get(key)}")
    for model in sorted(set(baseline.models) & set(candidate.models)):
        b, c = baseline.models[model], candidate.models[model]
        if b.get("recipe") != c.get("recipe") or b.get("cache_key") != c.get("cache_key"):
            out.append(f"model {model}: recipe or checkpoint differs ({b.get('cache_key')} vs {c.get('cache_key')})")
        bw, cw = str(b.get("weights_sha256") or ""), str(c.get("weights_sha256") or "")
        if bw and cw and bw != cw:
            out.append(
                f"model {model}: weights differ (sha256 {bw[:12]} vs {cw[:12]}): "
                "the difference includes training variance"
            )
    only = sorted(set(baseline.models) ^ set(candidate.models))
    if only:
        out.append(f"models in one run only: {', '.join(only)}")
    return out
