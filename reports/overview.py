"""The suite's overview figure (MLflow's parent run ``comparison.png``): every cell's curve, a panel per norm."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from reports.figures import AXIS_LABEL, figure_png


def comparison_figure(results: pd.DataFrame, *, title: str, norms: Sequence[str]) -> Figure:
    """Every (model, attack) curve of a suite, a panel per norm with its own x-axis; colour = model, style = attack.

    ``norms``: the norms that get a panel, in this order, where the results have them (others are left out).
    Drawn in seaborn's ``whitegrid`` theme, whatever was drawn before it in this process.
    """
    sns.set_theme(style="whitegrid", context="notebook")
    bounded = results[results["norm"].astype(str).isin(list(norms))]
    norms = [n for n in norms if n in set(bounded["norm"].astype(str))]
    cols = min(2, max(1, len(norms)))
    rows_n = max(1, -(-len(norms) // cols))
    fig, axes = plt.subplots(rows_n, cols, figsize=(6.4 * cols, 3.8 * rows_n + 0.5), squeeze=False)
    flat = list(axes.flat)
    models = list(dict.fromkeys(results["model"].astype(str)))
    colours = plt.get_cmap("tab10")
    styles = ["-", "--", ":", "-.", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1))]
    for ax, norm in zip(flat, norms, strict=False):
        part = bounded[bounded["norm"].astype(str) == norm]
        attacks = list(dict.fromkeys(part["attack"].astype(str)))
        for (model, attack), rows in part.groupby(["model", "attack"], sort=False):
            rows = rows.sort_values("eps")
            ax.plot(
                rows["eps"],
                rows["robust_accuracy"],
                marker="o",
                markersize=3,
                color=colours(models.index(str(model)) % 10),
                linestyle=styles[attacks.index(str(attack)) % len(styles)],
                label=f"{model} · {attack}",
            )
        ax.set_xlabel(AXIS_LABEL[norm])
        ax.set_ylabel("robust accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(norm)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    for ax in flat[len(norms) :]:
        ax.set_axis_off()
    if not norms:
        flat[0].text(0.5, 0.5, "no bounded attack in this suite", ha="center", va="center")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def comparison_png(results: pd.DataFrame, *, title: str, norms: Sequence[str], dpi: int = 100) -> bytes:
    """:func:`comparison_figure` as PNG bytes (a module-level function: :mod:`reports.drawing` can draw it)."""
    return figure_png(comparison_figure(results, title=title, norms=norms), dpi=dpi)
