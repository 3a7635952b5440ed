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

WORST_CASE = "worst case"


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
    auc: float
    median_min_eps: float  # inf: more than half of the samples robust at every grid eps
    attacks_in_worst_case: tuple[str, ...] = ()


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


def _cell_median_min_eps(cell: pd.DataFrame) -> float:
    """The bisected median minimal eps when the suite asked for it (``minimal_eps: true``), else the grid's."""
    if "median_min_eps" in cell.columns and cell["median_min_eps"].notna().any():
        return float(cell["median_min_eps"].dropna().iloc[0])
    return median_minimal_eps(cell["eps"], cell["robust_accuracy"])


def summary_tables(results: pd.DataFrame, samples: pd.DataFrame | None) -> list[SummaryTable]:
    """One :class:`SummaryTable` per norm, rows in the order of ``results``, worst case last per model."""
    tables = []
    for norm, part in results.groupby("norm", sort=False):
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
                            for r in cell.itertuples()
                        },
                        auc=stats.curve_auc(cell["eps"], cell["robust_accuracy"]),
                        median_min_eps=_cell_median_min_eps(cell),
                    )
                )
            if norm != "none" and by_model["attack"].nunique() > 1:
                rows.append(worst_case_row(str(model), by_model, samples))
        tables.append(SummaryTable(str(norm), epsilons, tuple(rows)))
    return tables


def worst_case_row(model: str, cells: pd.DataFrame, samples: pd.DataFrame | None) -> SummaryRow:
    """Robust accuracy of ``model`` against the best attack *per sample*, at each eps every attack covers.

    With per-sample flags a sample counts as robust only if no attack fooled it
    (at this eps or a smaller one); without them the row falls back to the
    minimum over attacks, which can only overstate the worst-case accuracy.
    """
    attacks = tuple(str(a) for a in cells["attack"].unique())
    grids = [set(cells.loc[cells["attack"] == a, "eps"].astype(float)) for a in attacks]
    common = sorted(set.intersection(*grids))
    clean = float(cells["clean_accuracy"].iloc[0])
    by_eps: dict[float, Interval] = {}
    per_sample = samples is not None and not samples.empty
    for eps in common:
        if per_sample:
            assert samples is not None
            mine = samples[(samples["model"] == model) & samples["attack"].isin(attacks) & (samples["eps"] == eps)]
            robust = mine.groupby("index")["correct"].all()
            count, n = int(robust.sum()), len(robust)
            low, high = stats.wilson_interval(count, n)
            by_eps[eps] = Interval(count / n if n else math.nan, low, high)
        else:
            at = cells[cells["eps"] == eps]
            worst = at.loc[at["robust_accuracy"].idxmin()]
            by_eps[eps] = Interval(float(worst["robust_accuracy"]), float(worst["ci_low"]), float(worst["ci_high"]))
    eps_arr = np.asarray(common, dtype=float)
    acc_arr = np.asarray([by_eps[e].value for e in common], dtype=float)
    return SummaryRow(
        model=model,
        attack=WORST_CASE if per_sample else f"{WORST_CASE} (min over attacks)",
        targeted=False,
        clean=clean,
        by_eps=by_eps,
        auc=stats.curve_auc(eps_arr, acc_arr) if len(common) else math.nan,
        median_min_eps=median_minimal_eps(eps_arr, acc_arr) if len(common) else math.nan,
        attacks_in_worst_case=attacks,
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
