"""Seaborn figures shared by ``bench run``, MLflow and ``bench report``.

All functions take tidy results (``bench.rundir.RESULT_COLUMNS``) or an
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
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure

CORRECT = "#1a7f37"
FOOLED = "#cf222e"


def save_figure(fig: Figure, path: Path, *, dpi: int = 110) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


AXIS_LABEL: dict[str, str] = {
    "linf": "Linf radius eps (pixel units)",
    "l2": "L2 radius eps (pixel units)",
    "l0": "fraction of pixels changed",
    "patch": "patch side (pixels)",
}
"""The x-axis label of a curve per norm."""

LINE_STYLES = ("-", "--", ":", "-.")

SERIES_COLOURS = ("#0072B2", "#E69F00", "#CC79A7", "#009E73", "#D55E00", "#56B4E9", "#000000", "#F0E442")
"""One colour per model: the Okabe-Ito colour-blind-safe set, ordered so that the first few are far apart.

Seaborn's ``colorblind`` order puts blue and bluish green at positions 1 and 3, which read
as two similar greens on thin lines; here the first three are blue, orange and purple, and
every pair of the first five is at least 30 apart in CIELAB (a test checks it).
"""


def series_colours(n: int) -> list[tuple[float, float, float]]:
    """``n`` distinct RGB colours: :data:`SERIES_COLOURS` up to eight series, evenly spaced hues beyond."""
    if n <= len(SERIES_COLOURS):
        return [to_rgb(c) for c in SERIES_COLOURS[:n]]
    return [tuple(c) for c in sns.color_palette("husl", n_colors=n)]


def curve_figure(
    rows: pd.DataFrame,
    *,
    hue: str = "model",
    title: str = "",
    y: str = "robust_accuracy",
    style: str | None = None,
) -> Figure:
    """Robust accuracy against eps, one colour per ``hue`` value (and line style per ``style`` value), 95% bands.

    Colours are distinct per ``hue`` value (:func:`series_colours`), the legend sits
    outside the axes on the right, and the x-axis is labelled for the rows' norm.
    """
    sns.set_theme(style="whitegrid", context="notebook")
    fig, ax = plt.subplots(figsize=(7.4, 4.2))
    names = list(dict.fromkeys(rows[hue]))
    colours = dict(zip(names, series_colours(max(1, len(names))), strict=False))
    styles = {s: LINE_STYLES[i % len(LINE_STYLES)] for i, s in enumerate(dict.fromkeys(rows[style]))} if style else {}
    keys = [hue, style] if style else [hue]
    markers = ("o", "s", "^", "D")
    for i, (key, part) in enumerate(rows.groupby(keys, sort=False)):
        key = key if isinstance(key, tuple) else (key,)
        part = part.sort_values("eps")
        colour = colours[key[0]]
        label = " · ".join(str(k) for k in key)
        line = styles.get(key[1], "-") if style else "-"
        run = list(styles).index(key[1]) if style else 0
        # runs after the first: smaller filled markers drawn on top of the first run's hollow ones,
        # so identical curves stay visible as a filled marker inside a ring
        face = "white" if style and run == 0 else colour
        ax.plot(
            part["eps"],
            part[y],
            marker=markers[run % len(markers)],
            linestyle=line,
            color=colour,
            label=label,
            markersize=8 if style and run == 0 else 5,
            markerfacecolor=face,
            zorder=2 + run,
        )
        if y == "robust_accuracy" and {"ci_low", "ci_high"} <= set(part.columns):
            alpha = 0.18 if not style or i == 0 else 0.08
            ax.fill_between(part["eps"], part["ci_low"], part["ci_high"], color=colour, alpha=alpha, linewidth=0)
    norms = rows["norm"].unique() if "norm" in rows.columns else []
    ax.set_xlabel(AXIS_LABEL.get(str(norms[0]), "eps") if len(norms) == 1 else "eps")
    ax.set_ylabel(y.replace("_", " "))
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    legend_title = f"{hue} · {style}" if style else hue
    ax.legend(title=legend_title, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)
    fig.tight_layout()
    return fig


def grid_rows(n_eps: int, max_rows: int) -> np.ndarray:
    """Indices of at most ``max_rows`` epsilons, evenly spread, always the first and the last."""
    if n_eps <= max_rows:
        return np.arange(n_eps)
    return np.unique(np.linspace(0, n_eps - 1, max_rows).round().astype(int))


def example_grid(
    examples: dict[str, np.ndarray],
    *,
    class_names: Sequence[str] | None = None,
    max_samples: int = 8,
    max_rows: int = 8,
    title: str = "",
) -> Figure:
    """Seed-notebook grid: rows are epsilons, columns samples; label green if still correct, red if fooled.

    ``examples`` holds ``x`` ``(k, C, H, W)``, ``x_adv`` ``(E, k, C, H, W)``, ``y``,
    ``adv_pred`` ``(E, k)`` and ``epsilons`` ``(E,)`` as written by the runner. At
    most ``max_rows`` epsilons are shown (evenly spread, first and last kept).

    The tiles are drawn as one montage image with text labels: one ``imshow``
    instead of E x k subplots keeps a report of a long epsilon sweep fast.
    """
    x_adv, y, pred, eps = examples["x_adv"], examples["y"], examples["adv_pred"], examples["epsilons"]
    rows = grid_rows(x_adv.shape[0], max_rows)
    k = max(1, min(max_samples, x_adv.shape[1]))
    tiles = [[_to_image(x_adv[r, c]) for c in range(min(k, x_adv.shape[1]))] for r in rows]
    h, w = x_adv.shape[-2], x_adv.shape[-1]
    gap_x, gap_y = max(1, w // 8), max(2, int(h * 0.45))  # room above each tile for its label
    colour = x_adv.shape[2] == 3
    canvas = np.ones((len(rows) * (h + gap_y), k * (w + gap_x), *((3,) if colour else ())), dtype=np.float32)
    for i, row in enumerate(tiles):
        for j, tile in enumerate(row):
            top, left = i * (h + gap_y) + gap_y, j * (w + gap_x)
            canvas[top : top + h, left : left + w] = tile
    fig, ax = plt.subplots(figsize=(1.3 * k + 0.8, 1.45 * len(rows) + (0.4 if title else 0.1)))
    ax.imshow(canvas, cmap=None if colour else "gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    top_y = int(max(y.max(initial=0), pred.max(initial=0)))
    names = list(class_names) if class_names is not None else [str(i) for i in range(top_y + 1)]
    for i, r in enumerate(rows):
        base = i * (h + gap_y)
        ax.text(-gap_x, base + gap_y + h / 2, f"eps={eps[r]:.3g}", ha="right", va="center", fontsize=8)
        for j in range(len(tiles[i])):
            ok = int(pred[r, j]) == int(y[j])
            label = f"{names[int(y[j])]}→{names[int(pred[r, j])]}"
            x_mid = j * (w + gap_x) + w / 2
            ax.text(
                x_mid, base + gap_y * 0.85, label, ha="center", va="bottom", fontsize=8, color=CORRECT if ok else FOOLED
            )
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def _to_image(img: np.ndarray) -> np.ndarray:
    """``(C, H, W)`` -> ``(H, W)`` for one channel or ``(H, W, C)`` for colour, clipped to [0, 1]."""
    img = np.clip(img, 0.0, 1.0)
    return img[0] if img.shape[0] == 1 else np.transpose(img, (1, 2, 0))


def heatmap_figure(table: pd.DataFrame, *, title: str = "") -> Figure:
    """Robust accuracy as a heatmap: ``table`` is models (index) x attacks (columns), values in [0, 1]."""
    sns.set_theme(style="white", context="notebook")
    width = max(5.0, 1.3 * table.shape[1] + 3.2)  # one attack: still room for the colour bar and its label
    height = max(2.6, 0.55 * table.shape[0] + 1.6)
    fig, ax = plt.subplots(figsize=(width, height))
    sns.heatmap(
        table.astype(float),
        annot=True,
        fmt=".2f",
        vmin=0.0,
        vmax=1.0,
        cmap="RdYlGn",
        linewidths=0.5,
        cbar_kws={"label": "robust accuracy", "shrink": 0.9},
        ax=ax,
    )
    ax.tick_params(axis="x", labelrotation=30 if table.shape[1] > 3 else 0)
    ax.set_xlabel("attack")
    ax.set_ylabel("model")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def first_image_strip(
    examples: dict[str, np.ndarray], *, class_names: Sequence[str] | None = None, title: str = ""
) -> Figure:
    """The first example image perturbed at each eps (top) and its perturbation ``x_adv - x`` (bottom).

    The perturbation is drawn on a diverging scale centred on 0 and shared by
    all columns (red brighter, blue darker), so its growth with eps is visible.
    ``examples`` as in :func:`example_grid`; needs at least one example.
    Each row is one montage image (tiles separated by transparent gaps), so the
    figure costs two ``imshow`` calls whatever the number of epsilons.
    """
    x, x_adv, y, pred, eps = (examples[k] for k in ("x", "x_adv", "y", "adv_pred", "epsilons"))
    e = x_adv.shape[0]
    delta = (x_adv[:, 0] - x[0][None]).mean(axis=1)  # (E, H, W), channels averaged
    limit = float(np.abs(delta).max()) or 1.0
    h, w = x_adv.shape[-2], x_adv.shape[-1]
    gap = max(1, w // 6)
    colour = x_adv.shape[2] == 3
    top = np.full((h, e * (w + gap) - gap, *((3,) if colour else ())), np.nan, dtype=np.float32)
    bottom = np.full((h, e * (w + gap) - gap), np.nan, dtype=np.float32)
    for i in range(e):
        left = i * (w + gap)
        top[:, left : left + w] = _to_image(x_adv[i, 0])
        bottom[:, left : left + w] = delta[i]
    if colour:  # RGB tiles cannot be NaN-masked: the gaps are white
        top = np.nan_to_num(top, nan=1.0)
    fig, (ax_top, ax_bottom) = plt.subplots(2, 1, figsize=(1.35 * e + 0.6, 3.3))
    ax_top.imshow(top, cmap=None if colour else "gray", vmin=0, vmax=1, interpolation="nearest")
    ax_bottom.imshow(bottom, cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
    names = _names(class_names, y, pred)
    for i in range(e):
        ok = int(pred[i, 0]) == int(y[0])
        caption = f"eps={eps[i]:.3g}\n{names[int(y[0])]}→{names[int(pred[i, 0])]}"
        ax_top.text(i * (w + gap) + w / 2, -1, caption, ha="center", va="bottom", fontsize=8,
                    color=CORRECT if ok else FOOLED)  # fmt: skip
    ax_top.text(-gap, h / 2, "adversarial", ha="right", va="center", fontsize=8, rotation=90)
    ax_bottom.text(-gap, h / 2, f"x_adv - x\n(±{limit:.2g})", ha="right", va="center", fontsize=8, rotation=90)
    for ax in (ax_top, ax_bottom):
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def fooling_grid(
    examples: dict[str, np.ndarray],
    targets: np.ndarray | None = None,
    *,
    class_names: Sequence[str] | None = None,
    max_samples: int = 8,
    title: str = "",
) -> Figure:
    """Synthesized (fooling) images at the largest eps, titled with the class the model sees.

    Red when the model predicts the target class (the synthesis fooled it),
    green otherwise. ``targets`` ``(k,)`` (-1 or ``None``: untargeted, red
    whenever the prediction differs from the label).
    """
    x_adv, y, pred = examples["x_adv"][-1], examples["y"], examples["adv_pred"][-1]
    k = max(1, min(max_samples, x_adv.shape[0]))
    fig, axes = plt.subplots(1, k, figsize=(1.35 * k, 1.7), squeeze=False)
    seen = np.concatenate([y.ravel(), np.asarray([] if targets is None else targets, dtype=np.int64).ravel()])
    names = _names(class_names, seen, pred)
    for c in range(k):
        ax = axes[0][c]
        ax.set_xticks([])
        ax.set_yticks([])
        if c >= x_adv.shape[0]:
            ax.axis("off")
            continue
        ax.imshow(_to_image(x_adv[c]), cmap="gray", vmin=0, vmax=1)
        target = int(targets[c]) if targets is not None and c < len(targets) else -1
        fooled = int(pred[c]) == target if target >= 0 else int(pred[c]) != int(y[c])
        label = f"→{names[int(pred[c])]}" + (f" (t={names[target]})" if target >= 0 else "")
        ax.set_title(label, color=FOOLED if fooled else CORRECT, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _names(class_names: Sequence[str] | None, y: np.ndarray, pred: np.ndarray) -> list[str]:
    if class_names is not None:
        return list(class_names)
    return [str(i) for i in range(int(max(y.max(initial=0), pred.max(initial=0))) + 1)]
