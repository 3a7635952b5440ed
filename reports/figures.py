"""Seaborn figures shared by ``bench run``, MLflow and ``bench report``.

All functions take tidy results (``bench.results.RESULT_COLUMNS``) or an
``examples.npz`` mapping and return a matplotlib Figure; nothing here touches
MLflow or the file system except :func:`save_figure`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

CORRECT = "#1a7f37"
FOOLED = "#cf222e"


def save_figure(fig: Figure, path: Path, *, dpi: int = 110) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


def curve_figure(rows: pd.DataFrame, *, hue: str = "model", title: str = "", y: str = "robust_accuracy") -> Figure:
    """Robust accuracy against eps, one line per ``hue`` value, with the 95% interval as a band."""
    sns.set_theme(style="whitegrid", context="notebook")
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    palette = sns.color_palette("colorblind", n_colors=max(1, rows[hue].nunique()))
    for color, (name, part) in zip(palette, rows.groupby(hue, sort=False), strict=False):
        part = part.sort_values("eps")
        ax.plot(part["eps"], part[y], marker="o", color=color, label=str(name))
        if y == "robust_accuracy" and {"ci_low", "ci_high"} <= set(part.columns):
            ax.fill_between(part["eps"], part["ci_low"], part["ci_high"], color=color, alpha=0.18, linewidth=0)
    ax.set_xlabel("epsilon (pixel units)")
    ax.set_ylabel(y.replace("_", " "))
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.legend(title=hue, frameon=False)
    fig.tight_layout()
    return fig


def example_grid(
    examples: dict[str, np.ndarray],
    *,
    class_names: Sequence[str] | None = None,
    max_samples: int = 8,
    title: str = "",
) -> Figure:
    """Seed-notebook grid: rows are epsilons, columns samples; title green if still correct, red if fooled.

    ``examples`` holds ``x`` ``(k, C, H, W)``, ``x_adv`` ``(E, k, C, H, W)``, ``y``,
    ``adv_pred`` ``(E, k)`` and ``epsilons`` ``(E,)`` as written by the runner.
    """
    x_adv, y, pred, eps = examples["x_adv"], examples["y"], examples["adv_pred"], examples["epsilons"]
    k = min(max_samples, x_adv.shape[1])
    rows = x_adv.shape[0]
    fig, axes = plt.subplots(rows, max(k, 1), figsize=(1.3 * max(k, 1), 1.45 * rows), squeeze=False)
    names = (
        list(class_names)
        if class_names is not None
        else [str(i) for i in range(int(max(y.max(initial=0), pred.max(initial=0))) + 1)]
    )
    for r in range(rows):
        for c in range(max(k, 1)):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= k:
                ax.axis("off")
                continue
            ax.imshow(_to_image(x_adv[r, c]), cmap="gray", vmin=0, vmax=1)
            ok = int(pred[r, c]) == int(y[c])
            ax.set_title(f"{names[int(y[c])]}→{names[int(pred[r, c])]}", color=CORRECT if ok else FOOLED, fontsize=8)
            if c == 0:
                ax.set_ylabel(f"eps={eps[r]:.3g}", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _to_image(img: np.ndarray) -> np.ndarray:
    """``(C, H, W)`` -> ``(H, W)`` for one channel or ``(H, W, C)`` for colour, clipped to [0, 1]."""
    img = np.clip(img, 0.0, 1.0)
    return img[0] if img.shape[0] == 1 else np.transpose(img, (1, 2, 0))
