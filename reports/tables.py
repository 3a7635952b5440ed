"""Summary tables of a run: model x attack with robust accuracy per eps, AUC, median minimal eps, worst case.

Attacks are grouped by norm, because an eps of 0.3 in Linf and in L2 are
different budgets: one table per norm, with the eps grid of that norm as columns.
Unbounded synthesis (norm ``none``) has no budget to compare and is left out of
the worst case.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bench import stats
from reports.sample_index import cell_index

WORST_CASE = "worst case"
HEADLINE_ATTACK = "reliable"
"""The attack whose robust accuracy is the leaderboard's headline when a model ran it (else the worst case)."""


@dataclass(frozen=True)
class Interval:
    """A robust accuracy in [0, 1] with its Wilson 95% interval."""

    value: float
    low: float
    high: float


@dataclass(frozen=True)
class SummaryRow:
    model: str
    attack: str
    targeted: bool
    clean: float
    by_eps: dict[float, Interval]
    auc: float  # over the suite's own eps grid ("AUC (grid)")
    median_min_eps: float  # inf: more than half of the samples robust at every grid eps
    attacks_in_worst_case: tuple[str, ...] = ()
    auc_reference: float = math.nan  # over the fixed range of the norm (stats.AUC_REFERENCE_RANGE): comparable
    auc_partial: bool = True  # the grid does not cover the reference range (see stats.reference_auc)


@dataclass(frozen=True)
class SummaryTable:
    norm: str
    epsilons: tuple[float, ...]
    rows: tuple[SummaryRow, ...]


def median_minimal_eps(epsilons: pd.Series | np.ndarray, robust_accuracy: pd.Series | np.ndarray) -> float:
    """The minimal eps of the median sample: the smallest grid eps at which robust accuracy is <= 0.5.

    A sample's minimal eps is the first grid eps at which it is not robust
    (:func:`bench.stats.first_fooled_eps`); the cumulative robust accuracy at eps is
    the fraction whose minimal eps is larger, so the (upper) median is read off
    the curve and needs no per-sample flags. ``inf`` when the curve never
    reaches 0.5.
    """
    order = np.argsort(np.asarray(epsilons, dtype=float))
    eps = np.asarray(epsilons, dtype=float)[order]
    acc = np.asarray(robust_accuracy, dtype=float)[order]
    below = np.nonzero(acc <= 0.5)[0]
    return float(eps[below[0]]) if len(below) else math.inf


def per_sample_minimal_eps(cell_samples: pd.DataFrame) -> pd.Series:
    """Each sample's minimal eps in one cell, indexed by sample ``index``: the one definition of the report.

    Bisected (the ``min_eps`` column, ``minimal_eps: true``) where the cell has it,
    else the first grid eps at which the cumulative robust flag is false
    (:func:`bench.stats.first_fooled_eps`); ``inf``: never fooled.
    """
    if "min_eps" in cell_samples.columns and cell_samples["min_eps"].notna().all():
        return cell_samples.groupby("index", sort=True)["min_eps"].first().astype(float)
    # eps x sample matrix of the flags (a pandas pivot_table per cell was half of a report's table time)
    eps, eps_row = np.unique(cell_samples["eps"].to_numpy(dtype=float), return_inverse=True)
    index, index_col = np.unique(cell_samples["index"].to_numpy(), return_inverse=True)
    flags = np.ones((len(eps), len(index)), dtype=bool)  # a missing (eps, sample) pair reads as not fooled
    flags[eps_row, index_col] = cell_samples["correct"].to_numpy(dtype=bool)  # a cell has one row per pair
    robust = stats.cumulative_robust(flags)
    return pd.Series(stats.first_fooled_eps(robust, eps), index=pd.Index(index, name="index"))


def median_of(min_eps: np.ndarray | pd.Series) -> float:
    """The (lower) median of per-sample minimal epsilons, as :func:`bench.minimal_eps.summarize` takes it."""
    values = np.asarray(min_eps, dtype=float)
    return float(np.quantile(values, 0.5, method="lower")) if values.size else math.nan


def _cell_median_min_eps(model: str, attack: str, cell: pd.DataFrame, samples: pd.DataFrame | None) -> float:
    """Median of :func:`per_sample_minimal_eps` with per-sample flags, else the stored (bisected) or grid median."""
    min_eps = None if samples is None or samples.empty else _cell_min_eps(samples, model, attack)
    if min_eps is not None:
        return median_of(min_eps)
    if "median_min_eps" in cell.columns and cell["median_min_eps"].notna().any():
        return float(cell["median_min_eps"].dropna().iloc[0])
    return median_minimal_eps(cell["eps"], cell["robust_accuracy"])


def _cell_samples(samples: pd.DataFrame | None, model: str, attacks: tuple[str, ...]) -> pd.DataFrame | None:
    """The rows of ``model`` under any of ``attacks`` (``None`` without per-sample flags)."""
    if samples is None or samples.empty:
        return None
    parts = cell_index(samples).parts
    found = [parts[(model, a)] for a in dict.fromkeys(attacks) if (model, a) in parts]
    if not found:
        return samples.iloc[:0]
    return found[0] if len(found) == 1 else pd.concat(found)


def _cell_min_eps(samples: pd.DataFrame, model: str, attack: str) -> pd.Series | None:
    """:func:`per_sample_minimal_eps` of one cell, computed once per samples content (``None``: no such cell)."""
    index = cell_index(samples)
    key = (model, attack)
    if key not in index.min_eps:
        part = index.parts.get(key)
        if part is None or part.empty:
            return None
        index.min_eps[key] = per_sample_minimal_eps(part)
    return index.min_eps[key]


def summary_tables(results: pd.DataFrame, samples: pd.DataFrame | None) -> list[SummaryTable]:
    """One :class:`SummaryTable` per bounded norm, rows in the order of ``results``, worst case last per model.

    Unbounded attacks (norm ``none``) have no eps axis: :func:`unbounded_rows` describes them.
    """
    tables = []
    for norm, part in results[results["norm"] != "none"].groupby("norm", sort=False):
        epsilons = tuple(sorted(float(e) for e in part["eps"].unique()))
        rows: list[SummaryRow] = []
        for model, by_model in part.groupby("model", sort=False):
            for attack, cell in by_model.groupby("attack", sort=False):
                cell = cell.sort_values("eps")
                rows.append(
                    SummaryRow(
                        model=str(model),
                        attack=str(attack),
                        targeted=bool(cell["targeted"].iloc[0]),
                        clean=float(cell["clean_accuracy"].iloc[0]),
                        by_eps={
                            float(r.eps): Interval(float(r.robust_accuracy), float(r.ci_low), float(r.ci_high))
                            for r in cell[["eps", "robust_accuracy", "ci_low", "ci_high"]].itertuples()
                        },
                        auc=stats.curve_auc(cell["eps"], cell["robust_accuracy"]),
                        median_min_eps=_cell_median_min_eps(str(model), str(attack), cell, samples),
                        **_reference(cell["eps"], cell["robust_accuracy"], str(norm)),
                    )
                )
            if by_model["attack"].nunique() > 1:
                rows.append(worst_case_row(str(model), by_model, samples))
        tables.append(SummaryTable(str(norm), epsilons, tuple(rows)))
    return tables


def _reference(eps: pd.Series | np.ndarray, acc: pd.Series | np.ndarray, norm: str) -> dict[str, float | bool]:
    ref = stats.reference_auc(np.asarray(eps, dtype=float), np.asarray(acc, dtype=float), norm)
    return {"auc_reference": ref.value, "auc_partial": ref.partial}


def common_samples(samples: pd.DataFrame) -> pd.DataFrame:
    """The rows of the sample indices every attack in ``samples`` ran.

    An attack may run on the first ``n`` samples only (``AttackSpec.n``): a per-sample worst
    case over it and a full-data attack is defined on those ``n`` samples, not on the rest.
    """
    counts = samples.groupby("index")["attack"].nunique()
    keep = counts.index[counts == samples["attack"].nunique()]
    return samples if len(keep) == len(counts) else samples[samples["index"].isin(keep)]


def worst_case_at(model: str, cells: pd.DataFrame, samples: pd.DataFrame | None, eps: float) -> Interval:
    """Robust accuracy of ``model`` at ``eps`` against the best of the attacks with ``eps`` on their grid.

    Per sample (when flags are given) over the samples every one of those attacks ran: an attack
    limited to the first ``n`` samples (``AttackSpec.n``) limits the worst case to them too.
    """
    at = cells[np.isclose(cells["eps"].astype(float), eps, rtol=0, atol=1e-12)]
    if at.empty:
        return Interval(math.nan, math.nan, math.nan)
    attacks = tuple(str(a) for a in at["attack"].unique())
    memo = None if samples is None or samples.empty else cell_index(samples).worst
    key = ("at", model, attacks, float(eps))
    if memo is not None and key in memo:
        found = memo[key]
        assert isinstance(found, Interval)
        return found
    mine = _cell_samples(samples, model, attacks)
    if mine is not None and not mine.empty:  # a value of the samples alone: memoized by their content
        assert memo is not None
        mine = mine[np.isclose(mine["eps"].astype(float), eps, rtol=0, atol=1e-12)]
        robust = common_samples(mine).groupby("index")["correct"].all()
        count, n = int(robust.sum()), len(robust)
        low, high = stats.wilson_interval(count, n)
        memo[key] = found = Interval(count / n if n else math.nan, low, high)
        return found
    worst = at.loc[at["robust_accuracy"].idxmin()]
    return Interval(float(worst["robust_accuracy"]), float(worst["ci_low"]), float(worst["ci_high"]))


def worst_case_row(model: str, cells: pd.DataFrame, samples: pd.DataFrame | None) -> SummaryRow:
    """Robust accuracy of ``model`` against the best attack *per sample*, at each eps every attack covers.

    With per-sample flags a sample counts as robust only if no attack fooled it
    (at this eps or a smaller one), and its minimal eps is the smallest of its
    per-attack minimal epsilons (:func:`per_sample_minimal_eps`), so the worst
    case's median minimal eps is never above any attack's. Without flags the row
    falls back to the minimum over attacks, which can only overstate the
    worst-case accuracy, and to the smallest of the attacks' medians.
    """
    attacks = tuple(str(a) for a in cells["attack"].unique())
    grids = [set(cells.loc[cells["attack"] == a, "eps"].astype(float)) for a in attacks]
    common = sorted(set.intersection(*grids))
    mine = _cell_samples(samples, model, attacks)
    if mine is None or mine.empty:  # no flags of this model: read off the results, which the memo's key omits
        return _worst_case_row(model, cells, samples, attacks, common)
    # the summary tables and the leaderboard ask for the same rows of the same samples content
    key = ("row", model, attacks, tuple(common), float(cells["clean_accuracy"].iloc[0]), str(cells["norm"].iloc[0]))
    memo = cell_index(samples).worst
    if key not in memo:
        memo[key] = _worst_case_row(model, cells, samples, attacks, common)
    found = memo[key]
    assert isinstance(found, SummaryRow)
    return found


def _fill_worst_at(model: str, samples: pd.DataFrame, attacks: tuple[str, ...], common: list[float]) -> None:
    """:func:`worst_case_at` of ``attacks`` at every eps of ``common`` (all of them on each attack's grid),
    in one grouping over the samples instead of one per eps; memoized as :func:`worst_case_at` reads it."""
    memo = cell_index(samples).worst
    todo = [eps for eps in common if ("at", model, attacks, float(eps)) not in memo]
    mine = _cell_samples(samples, model, attacks)
    if not todo or mine is None or mine.empty:
        return
    eps_col = mine["eps"].to_numpy(dtype=float)
    grid = np.asarray(todo, dtype=float)
    slot = np.abs(eps_col[:, None] - grid[None, :]).argmin(axis=1)  # the nearest eps of the grid ...
    hit = np.isclose(grid[slot], eps_col, rtol=0, atol=1e-12)  # ... if it is that eps
    slot = slot[hit]
    _, sample = np.unique(mine["index"].to_numpy()[hit], return_inverse=True)
    _, attack = np.unique(mine["attack"].to_numpy(dtype=str)[hit], return_inverse=True)
    correct = mine["correct"].to_numpy(dtype=bool)[hit]
    n_samples, n_attacks = int(sample.max(initial=-1)) + 1, int(attack.max(initial=-1)) + 1
    # one group per (eps, sample): robust if every attack left it correct, counted if every attack at that eps ran it
    group = slot * n_samples + sample
    fooled = np.bincount(group, weights=~correct, minlength=len(grid) * n_samples)
    pairs = np.unique(group * n_attacks + attack)  # distinct (group, attack)
    attacks_per_group = np.bincount(pairs // n_attacks, minlength=len(grid) * n_samples)
    ran = np.bincount(np.unique(slot * n_attacks + attack) // n_attacks, minlength=len(grid))  # attacks per eps
    present = attacks_per_group > 0
    kept = present & (attacks_per_group == np.repeat(ran, n_samples))
    robust = kept & (fooled == 0)
    kept_per_eps = kept.reshape(len(grid), n_samples).sum(axis=1)
    robust_per_eps = robust.reshape(len(grid), n_samples).sum(axis=1)
    for i, eps in enumerate(todo):
        count, n = int(robust_per_eps[i]), int(kept_per_eps[i])
        low, high = stats.wilson_interval(count, n)
        memo[("at", model, attacks, float(eps))] = Interval(count / n if n else math.nan, low, high)


def _worst_case_row(
    model: str, cells: pd.DataFrame, samples: pd.DataFrame | None, attacks: tuple[str, ...], common: list[float]
) -> SummaryRow:
    if samples is not None and not samples.empty:
        _fill_worst_at(model, samples, attacks, common)
    by_eps = {eps: worst_case_at(model, cells, samples, eps) for eps in common}
    eps_arr = np.asarray(common, dtype=float)
    acc_arr = np.asarray([by_eps[e].value for e in common], dtype=float)
    mine = _cell_samples(samples, model, attacks)
    if mine is not None and not mine.empty:
        assert samples is not None
        per_attack = [m for a in attacks if (m := _cell_min_eps(samples, model, a)) is not None]
        median = median_of(pd.concat(per_attack, axis=1).min(axis=1))
    else:
        median = min(_cell_median_min_eps(model, a, cells[cells["attack"] == a], None) for a in attacks)
    norm = str(cells["norm"].iloc[0])
    return SummaryRow(
        model=model,
        attack=WORST_CASE if mine is not None and not mine.empty else f"{WORST_CASE} (min over attacks)",
        targeted=False,
        clean=float(cells["clean_accuracy"].iloc[0]),
        by_eps=by_eps,
        auc=stats.curve_auc(eps_arr, acc_arr) if len(common) else math.nan,
        median_min_eps=median,
        attacks_in_worst_case=attacks,
        **(_reference(eps_arr, acc_arr, norm) if len(common) else {}),
    )


def choose_heatmap_eps(results: pd.DataFrame, norm: str, requested: float | None = None) -> float:
    """The eps of the heatmap for ``norm``: ``requested`` if on the grid, else the most informative one.

    Most informative: the grid eps (> 0 when there is one) whose mean robust
    accuracy over all cells is closest to 0.5, where models differ most.
    """
    part = results[results["norm"] == norm]
    grid = sorted(float(e) for e in part["eps"].unique())
    if requested is not None:
        close = [e for e in grid if math.isclose(e, requested, rel_tol=1e-9, abs_tol=1e-12)]
        if close:
            return close[0]
    positive = [e for e in grid if e > 0] or grid
    means = part.groupby("eps")["robust_accuracy"].mean()
    return min(positive, key=lambda e: (abs(float(means[e]) - 0.5), e))


def leaderboard(results: pd.DataFrame, samples: pd.DataFrame | None) -> pd.DataFrame:
    """A RobustBench-style table, one row per model, best first.

    Columns: ``model``, ``clean_accuracy``, then per bounded norm of the run
    (in order of appearance): ``robust_<norm>`` the worst-case robust accuracy
    over all attacks of that norm at the norm's reference eps
    (:data:`bench.stats.REFERENCE_EPS`; ``nan`` when no attack has it on its grid),
    ``auc_<norm>`` the reference-range AUC of the worst-case curve
    (:func:`bench.stats.reference_auc`) and ``auc_<norm>_partial`` whether the
    grid falls short of that range. ``attrs["reference_eps"]`` maps each norm to
    its eps. A model that ran the ``reliable`` preset at a norm is scored by it alone
    (``attrs["headline"]``). Sorted by the first norm's robust accuracy, then clean accuracy.

    With certificates (a suite's ``certify:``, the ``certified_accuracy`` column of the results): per norm a
    certifier proved anything at, ``certified_<norm>`` (the best bound certificate at the reference eps, the
    bracket's lower side) and ``gap_<norm>`` (robust minus certified: what neither side settles);
    ``attrs["certified"]`` lists those norms.
    """
    norms = [str(n) for n in results["norm"].unique() if str(n) != "none" and str(n) in stats.REFERENCE_EPS]
    rows = []
    headline = {norm: WORST_CASE for norm in norms}
    certified_norms = []
    if "certified_accuracy" in results.columns:
        has = results[results["certified_accuracy"].notna()]
        certified_norms = [n for n in norms if (has["norm"] == n).any()]
    for model, by_model in results.groupby("model", sort=False):
        row: dict[str, object] = {"model": str(model), "clean_accuracy": float(by_model["clean_accuracy"].iloc[0])}
        for norm in norms:
            cells = by_model[by_model["norm"] == norm]
            if cells.empty:
                row.update({f"robust_{norm}": math.nan, f"auc_{norm}": math.nan, f"auc_{norm}_partial": True})
                continue
            # The headline is the reliable-evaluation preset (bench/attacks/reliable.py) when the model ran it
            # at this norm: the standardized AutoAttack-style number, not a worst case over whatever else ran.
            reliable = cells[cells["attack_name"] == HEADLINE_ATTACK] if "attack_name" in cells else cells.iloc[:0]
            if not reliable.empty:
                cells = reliable
                headline[norm] = HEADLINE_ATTACK
            worst = worst_case_row(str(model), cells, samples)
            row[f"robust_{norm}"] = worst_case_at(str(model), cells, samples, stats.REFERENCE_EPS[norm]).value
            row[f"auc_{norm}"] = worst.auc_reference
            row[f"auc_{norm}_partial"] = worst.auc_partial
            if norm in certified_norms:
                at = by_model[(by_model["norm"] == norm) & np.isclose(by_model["eps"], stats.REFERENCE_EPS[norm])]
                proven = float(at["certified_accuracy"].max()) if not at.empty else math.nan
                row[f"certified_{norm}"] = proven
                row[f"gap_{norm}"] = float(row[f"robust_{norm}"]) - proven  # type: ignore[arg-type]
        rows.append(row)
    table = pd.DataFrame(
        rows,
        columns=["model", "clean_accuracy"]
        + [
            f"{kind}_{norm}{tail}"
            for norm in norms
            for kind, tail in (("robust", ""), ("auc", ""), ("auc", "_partial"))
        ]
        + [f"{kind}_{norm}" for norm in certified_norms for kind in ("certified", "gap")],
    )
    keys = ([f"robust_{norms[0]}"] if norms else []) + ["clean_accuracy"]
    table = table.sort_values(keys, ascending=False, kind="stable", na_position="last").reset_index(drop=True)
    table.attrs["reference_eps"] = {norm: stats.REFERENCE_EPS[norm] for norm in norms}
    table.attrs["headline"] = headline  # per norm: "reliable" (if any model ran it) or "worst case"
    table.attrs["certified"] = certified_norms
    return table
