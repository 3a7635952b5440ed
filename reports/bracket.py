"""The bracket in a report: certified (lower) beside attacked (upper) robust accuracy, per model.

True robust accuracy lies between the fraction a sound certifier proved robust and the fraction the attacks
failed to break. The report shows the table of ``certified.csv``, one sentence per model saying how much of its
robust accuracy is proven at the norm's reference eps, and one figure per (norm, kind) with each model's band
between its best certified curve and its attacked curve.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import pyplot as plt
from matplotlib.figure import Figure

from bench import stats
from reports.figures import AXIS_LABEL, CURVE_SIZE, figure_png, series_colours
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
    best = ordered.drop_duplicates(["model", "kind", "norm", "eps"]).sort_values(["eps"], kind="stable")
    return best[["model", "kind", "norm", "eps", "certifier", "certified_accuracy", "attacked_accuracy", "gap"]]


def bracket_sentences(certified: pd.DataFrame) -> list[str]:
    """One sentence per (model, kind, norm): how much of the robust accuracy is proven at the reference eps (or
    the largest certified eps below it when the grid lacks it)."""
    lines = []
    best = best_curves(certified)
    for (model, kind, norm), part in best.groupby(["model", "kind", "norm"], sort=False):
        ref = stats.REFERENCE_EPS.get(str(norm), math.inf)
        below = part[part["eps"] <= ref + 1e-12]
        row = (below if not below.empty else part).iloc[-1]
        proven, attacked = float(row["certified_accuracy"]), float(row["attacked_accuracy"])
        where = f"{norm} eps {row['eps']:g}"
        if kind == "smoothed":
            lines.append(
                f"{model}: the Gaussian-smoothed classifier is certified on {proven:.3f} of the samples at {where} "
                f"({row['certifier']}; a probabilistic certificate for the smoothed model, not the model itself)."
            )
        elif math.isnan(attacked):
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


def band_figure(part: pd.DataFrame, *, title: str) -> Figure:
    """Each model's band between its best certified curve (solid) and its attacked curve (dashed); ``part`` is
    :func:`best_curves` rows of one norm and kind."""
    fig, ax = plt.subplots(figsize=CURVE_SIZE)
    models = list(dict.fromkeys(part["model"]))
    for colour, model in zip(series_colours(max(1, len(models))), models, strict=False):
        rows = part[part["model"] == model].sort_values("eps")
        eps = rows["eps"].to_numpy(dtype=float)
        low = rows["certified_accuracy"].to_numpy(dtype=float)
        high = rows["attacked_accuracy"].to_numpy(dtype=float)
        ax.plot(eps, low, marker="o", color=colour, label=f"{model} certified")
        if np.isfinite(high).any():
            ax.plot(eps, high, marker="s", linestyle="--", color=colour, label=f"{model} attacked")
            ax.fill_between(eps, low, np.where(np.isfinite(high), high, low), color=colour, alpha=0.18, linewidth=0)
    norm = str(part["norm"].iloc[0]) if len(part) else ""
    ax.set_xlabel(AXIS_LABEL.get(norm, "eps"))
    ax.set_ylabel("robust accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)
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
