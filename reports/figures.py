"""Seaborn figures shared by ``bench run``, MLflow and ``bench report``.

The figure functions take tidy results (``bench.rundir.RESULT_COLUMNS``) and return a matplotlib
Figure; :func:`figure_png` and :func:`attack_curves` encode them. Nothing here touches MLflow or
the file system.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure

FAST_PNG = {"compress_level": 3}
"""zlib level of every figure PNG: half the encoding time of the default 6, files about 10% larger
(the same level as :func:`reports.montage.png_bytes`)."""


def figure_png(fig: Figure, *, dpi: int = 100) -> bytes:
    """``fig`` as PNG bytes, then closed.

    The figures of this module lay themselves out (``tight_layout`` keeps a legend outside the
    axes inside the figure), so the PNG is drawn once: ``bbox_inches="tight"`` would draw it
    twice, a fifth more time per figure.
    """
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi, pil_kwargs=FAST_PNG)
    finally:
        plt.close(fig)
    return buf.getvalue()


def attack_curves(results: pd.DataFrame, *, dpi: int = 100) -> dict[str, bytes]:
    """PNG per attack of :func:`curve_figure`: a line per model, titled ``attack (norm)``.

    The same figures serve the run directory's ``figures/curve_<attack>.png`` and the
    report's curves section (bounded attacks), so a run draws each of them once.
    """
    with CurvePainter(dpi=dpi) as painter:
        return {
            str(attack): painter.png(rows, title=curve_title(str(attack), rows), legend=True)
            for attack, rows in results.groupby("attack", sort=False)
        }


def curve_title(attack: str, rows: pd.DataFrame) -> str:
    """``attack (norm)``, or the attack alone for unbounded attacks (norm ``none``)."""
    norm = str(rows["norm"].iloc[0]) if "norm" in rows.columns and len(rows) else "none"
    return attack if norm == "none" else f"{attack} ({norm})"


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


CURVE_SIZE = (7.4, 4.2)
"""Inches of a curve figure (740 x 420 pixels at the default 100 dpi)."""


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
    fig, ax = plt.subplots(figsize=CURVE_SIZE)
    plot_curves(ax, rows, hue=hue, y=y, style=style)
    ax.set_title(title)
    legend_title = f"{hue} · {style}" if style else hue
    ax.legend(title=legend_title, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)
    fig.tight_layout()
    return fig


def plot_curves(
    ax: Axes, rows: pd.DataFrame, *, hue: str = "model", y: str = "robust_accuracy", style: str | None = None
) -> None:
    """Draw :func:`curve_figure`'s lines, bands and axis labels on ``ax`` (no title, no legend)."""
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


SUBPLOT_MARGINS = ("left", "right", "bottom", "top", "wspace", "hspace")


class CurvePainter:
    """Many single-model curves on one reused figure: the per-cell curve PNG of every MLflow nested run.

    A fresh :func:`curve_figure` per cell spends a third of its time building the figure;
    here it is built once, and each cell only swaps its line and band (title
    ``model · attack``, so no legend) and lays it out again before the PNG is drawn: the
    PNG is byte for byte what a fresh painter draws for that cell alone.
    Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, *, dpi: int = 100) -> None:
        self.dpi = dpi
        self._fig: Figure | None = None
        self._ax: Axes | None = None

    def png(self, rows: pd.DataFrame, *, title: str, legend: bool = False) -> bytes:
        """PNG of ``rows`` (eps, robust_accuracy, ci_low, ci_high, norm; a line per model) titled ``title``.

        ``legend``: the models' legend outside the axes on the right, as :func:`curve_figure`
        draws it (the PNG is then byte for byte that figure's :func:`figure_png`).
        """
        if self._fig is None or self._ax is None:
            sns.set_theme(style="whitegrid", context="notebook")
            self._fig, self._ax = plt.subplots(figsize=CURVE_SIZE)
        else:
            for artist in [*self._ax.lines, *self._ax.collections]:
                artist.remove()
            if self._ax.get_legend() is not None:
                self._ax.get_legend().remove()
            self._ax.set_prop_cycle(None)
        ax = self._ax
        plot_curves(ax, rows, hue="model")
        ax.relim()
        ax.autoscale_view()
        ax.set_title(title)
        if legend:
            ax.legend(title="model", frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)
        # Laid out anew from the default margins, as a fresh figure is (tick labels differ between grids).
        self._fig.subplots_adjust(**{k: plt.rcParams[f"figure.subplot.{k}"] for k in SUBPLOT_MARGINS})
        self._fig.tight_layout()
        buf = io.BytesIO()
        self._fig.savefig(buf, format="png", dpi=self.dpi, pil_kwargs=FAST_PNG)
        return buf.getvalue()

    def close(self) -> None:
        if self._fig is not None:
            plt.close(self._fig)
        self._fig = self._ax = None

    def __enter__(self) -> CurvePainter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
