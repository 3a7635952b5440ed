"""The bracket in a report: certified (lower) beside attacked (upper) robust accuracy, per model.

True robust accuracy lies between the fraction a sound certifier proved robust and the fraction the attacks
failed to break. The report shows the table of ``certified.csv``, one sentence per model saying how much of its
robust accuracy is proven at the norm's reference eps, and one figure per (norm, kind) with each model's band
between its best certified curve and its attacked curve.
"""

from __future__ import annotations

import json
import math
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import pyplot as plt
from matplotlib.figure import Figure

from bench import stats
from reports.figures import AXIS_LABEL, figure_png, series_colours
from reports.writer import FigureWriter

BRACKET_VIEW = [
    "model",
    "certifier",
    "kind",
    "norm",
    "eps",
    "n",
    "certified_accuracy",
    "certified_ci_low",
    "certified_ci_high",
    "attacked_accuracy",
    "gap",
    "attacked_by",
    "seconds",
]
"""The columns of the report's bracket table, in order."""


def bracket_rows(certified: pd.DataFrame) -> list[dict[str, Any]]:
    """The certified table as report rows (``BRACKET_VIEW`` columns), in run order."""
    return certified[BRACKET_VIEW].to_dict("records")


def best_curves(certified: pd.DataFrame) -> pd.DataFrame:
    """Per (model, kind, norm, eps): the best certified accuracy over certifiers, and the attacked accuracy."""
    ordered = certified.sort_values("certified_accuracy", ascending=False, kind="stable")
    best = ordered.drop_duplicates(["model", "kind", "norm", "eps"])
    rank = {model: i for i, model in enumerate(dict.fromkeys(certified["model"]))}  # the run's model order
    best = best.assign(_rank=best["model"].map(rank)).sort_values(["_rank", "eps"], kind="stable")
    return best[["model", "kind", "norm", "eps", "certifier", "certified_accuracy", "attacked_accuracy", "gap"]]


def bracket_sentences(certified: pd.DataFrame) -> list[str]:
    """One sentence per (model, kind, norm): how much of the robust accuracy is proven at the reference eps (or
    the largest certified eps below it when the grid lacks it); for smoothing, at the largest radius it certifies
    any sample at, with the largest radius its sample count can certify."""
    lines = []
    best = best_curves(certified)
    params = certified.drop_duplicates(["model", "certifier"]).set_index(["model", "certifier"])["certifier_params"]
    for (model, kind, norm), part in best.groupby(["model", "kind", "norm"], sort=False):
        if kind == "smoothed":
            lines.append(_smoothed_sentence(str(model), part, params))
            continue
        ref = stats.REFERENCE_EPS.get(str(norm), math.inf)
        below = part[part["eps"] <= ref + 1e-12]
        row = (below if not below.empty else part).iloc[-1]
        proven, attacked = float(row["certified_accuracy"]), float(row["attacked_accuracy"])
        where = f"{norm} eps {row['eps']:g}"
        if math.isnan(attacked):
            lines.append(f"{model}: {proven:.3f} certified at {where} by {row['certifier']}; no attack of that norm.")
        elif attacked <= 0:
            lines.append(f"{model}: no sample survives the attacks at {where}; nothing is left to prove.")
        elif proven < 0.05 * attacked:
            lines.append(
                f"{model}: certified {proven:.3f} beside an attacked {attacked:.3f} at {where}: almost none of its "
                "robust accuracy is proven, so the attacked number is an upper bound only (usual for a model not "
                "trained for certification)."
            )
        else:
            lines.append(
                f"{model}: {proven:.3f} of the attacked {attacked:.3f} is proven at {where} "
                f"({100 * proven / attacked:.0f}%, by {row['certifier']}); true robust accuracy lies in "
                f"[{proven:.3f}, {attacked:.3f}], a gap of {attacked - proven:.3f}."
            )
    return lines


def _smoothed_sentence(model: str, part: pd.DataFrame, params: pd.Series) -> str:
    positive = part[(part["certified_accuracy"] > 0) & (part["eps"] > 0)]
    row = (positive if not positive.empty else part).iloc[-1]
    text = (
        f"{model}: the Gaussian-smoothed classifier is certified on {float(row['certified_accuracy']):.3f} of the "
        f"samples at {row['norm']} radius {row['eps']:g} ({row['certifier']}; a probabilistic certificate for the "
        "smoothed model, not the model itself)"
    )
    try:
        given = json.loads(str(params[(model, row["certifier"])]))
        sigma, n, alpha = float(given["sigma"]), int(given["n"]), float(given["alpha"])
    except (KeyError, TypeError, ValueError):
        return text + "."
    if not (n > 0 and 0 < alpha < 1 and sigma > 0):  # an edited table (--trust-edited): no bound to state
        return text + "."
    # all n draws on the class: the one-sided Clopper-Pearson bound is alpha ** (1 / n), the largest radius
    largest = sigma * NormalDist().inv_cdf(alpha ** (1 / n))
    return text + f"; with n = {n} draws no radius above {largest:.3f} can be certified."


def band_figure(part: pd.DataFrame, *, title: str) -> Figure:
    """One panel per model: its band between its best certified curve (solid) and its attacked curve (dashed);
    ``part`` is :func:`best_curves` rows of one norm and kind."""
    models = list(dict.fromkeys(part["model"]))
    columns = min(4, max(1, len(models)))
    rows_n = -(-len(models) // columns)
    fig, axes = plt.subplots(
        rows_n, columns, figsize=(2.6 * columns + 0.6, 2.5 * rows_n + 0.7), sharex=True, sharey=True, squeeze=False
    )
    norm = str(part["norm"].iloc[0]) if len(part) else ""
    for ax, colour, model in zip(axes.flat, series_colours(max(1, len(models))), models, strict=False):
        rows = part[part["model"] == model].sort_values("eps")
        eps = rows["eps"].to_numpy(dtype=float)
        low = rows["certified_accuracy"].to_numpy(dtype=float)
        high = rows["attacked_accuracy"].to_numpy(dtype=float)
        ax.plot(eps, low, marker="o", markersize=4, color=colour, label="certified")
        if np.isfinite(high).any():
            ax.plot(eps, high, marker="s", markersize=4, linestyle="--", color=colour, label="attacked")
            ax.fill_between(eps, low, np.where(np.isfinite(high), high, low), color=colour, alpha=0.2, linewidth=0)
        ax.set_title(model, fontsize=10)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(models) :]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel(AXIS_LABEL.get(norm, "eps"), fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("robust accuracy")
    axes.flat[0].legend(frameon=False, fontsize=8, loc="lower left")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def band_parts(certified: pd.DataFrame) -> list[tuple[str, str, pd.DataFrame]]:
    """``(norm, kind, rows)`` for each band figure of a run."""
    best = best_curves(certified)
    return [(str(norm), str(kind), rows) for (norm, kind), rows in best.groupby(["norm", "kind"], sort=False)]


def bracket_fields(prefix: str, certified: pd.DataFrame | None, writer: FigureWriter) -> dict[str, Any]:
    """The report section's ``bracket`` rows, ``bracket_sentences`` and ``bands`` figures (none without
    certificates)."""
    if certified is None or certified.empty:
        return {}
    bands = []
    for norm, kind, rows in band_parts(certified):
        what = "smoothed classifier" if kind == "smoothed" else "bound certificates"
        png = figure_png(
            band_figure(rows, title=f"certified (solid) to attacked (dashed), {norm}, {what}"), dpi=writer.dpi
        )
        caption = f"the bracket per model, {norm} ({what}): true robust accuracy lies in the band"
        bands.append(writer.add_png(png, f"{prefix}-bracket-{norm}-{kind}", caption))
    return {"bracket": bracket_rows(certified), "bracket_sentences": bracket_sentences(certified), "bands": bands}
