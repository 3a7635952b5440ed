"""Seaborn figures shared by ``bench run``, MLflow and ``bench report``.

The figure functions take tidy results (``bench.rundir.RESULT_COLUMNS``) and return a matplotlib
Figure; :func:`figure_png` and :func:`attack_curves` encode them. Nothing here touches MLflow or
the file system.
"""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from PIL import Image
from seaborn.utils import relative_luminance

from reports.montage import png_bytes


def rasterize(fig: Figure, *, dpi: int = 100) -> bytes:
    """``fig`` drawn once on its Agg canvas at ``dpi`` and encoded as an RGB PNG (the figure stays open).

    ``savefig`` would draw the figure a second time after ``tight_layout`` had measured its text,
    and with a fresh renderer (so without the text-extent cache that measuring filled): drawing
    on the canvas and encoding its buffer with Pillow gives the same pixels in about 60% of the
    time. The figures here have an opaque white face, so the alpha channel is dropped.
    """
    if fig.get_dpi() != dpi:
        fig.set_dpi(dpi)
    fig.canvas.draw()
    return encode_canvas(fig)


def encode_canvas(fig: Figure) -> bytes:
    """What ``fig``'s Agg canvas holds now, as an RGB PNG (:func:`reports.montage.png_bytes`)."""
    width, height = fig.canvas.get_width_height(physical=True)
    image = Image.frombuffer("RGBA", (width, height), fig.canvas.buffer_rgba(), "raw", "RGBA", 0, 1)
    return png_bytes(image.convert("RGB"))


def figure_png(fig: Figure, *, dpi: int = 100) -> bytes:
    """``fig`` as PNG bytes (:func:`rasterize`), then closed.

    The figures of this module lay themselves out (``tight_layout`` keeps a legend outside the
    axes inside the figure), so the PNG is drawn once: ``bbox_inches="tight"`` would draw it
    again.
    """
    try:
        return rasterize(fig, dpi=dpi)
    finally:
        plt.close(fig)


def attack_curves(results: pd.DataFrame, *, dpi: int = 100) -> dict[str, bytes]:
    """PNG per bounded attack of :func:`curve_figure`: a line per model, titled ``attack (norm)``.

    The same figures serve the run directory's ``figures/curve_<attack>.png`` and the
    report's curves section, so a run draws each of them once. Unbounded attacks (norm
    ``none``: fooling images, targeted ascent) have a single eps and no curve.
    """
    bounded = results[results["norm"] != "none"] if "norm" in results.columns else results
    with CurvePainter(dpi=dpi) as painter:
        return {
            str(attack): painter.png(rows, title=curve_title(str(attack), rows), legend=True)
            for attack, rows in bounded.groupby("attack", sort=False)
        }


def curve_pngs(curves: list[tuple[pd.DataFrame, str]], *, dpi: int = 100, keep: bool = False) -> list[bytes]:
    """PNG per ``(rows, title)`` of ``curves`` (a line per model, no legend) on one :class:`CurvePainter`:
    MLflow's per-cell curves.

    ``keep``: draw on a painter kept for later calls in this process, so that batches of curves share
    its layouts and drawn axes (:mod:`reports.drawing`'s helper process, which draws one call at a
    time); it is put back in its theme first, whatever was drawn in between.
    """
    if not keep:
        with CurvePainter(dpi=dpi) as painter:
            return [painter.png(rows, title=title) for rows, title in curves]
    painter = _KEPT_PAINTERS.setdefault(dpi, CurvePainter(dpi=dpi))
    sns.set_theme(style="whitegrid", context="notebook")  # as when the painter made its figure
    return [painter.png(rows, title=title) for rows, title in curves]


def heatmap_png(table: pd.DataFrame, *, title: str = "", dpi: int = 100) -> bytes:
    """:func:`heatmap_figure` as PNG bytes."""
    return figure_png(heatmap_figure(table, title=title), dpi=dpi)


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
    """Many curves on one reused figure: the run's per-attack curves and every MLflow nested run's curve.

    A fresh :func:`curve_figure` per curve spends a third of its time building the figure;
    here it is built once, and each curve only swaps its lines, bands, title and legend. The
    layout (:meth:`_lay_out`) and the drawn axes (:meth:`_blit`) are reused between curves that
    share them. Every PNG is byte for byte what a fresh figure draws for that curve alone
    (0.122 s -> 0.041 s for a per-cell curve). Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, *, dpi: int = 100) -> None:
        self.dpi = dpi
        self._fig: Figure | None = None
        self._ax: Axes | None = None
        self._layouts: dict[tuple[object, ...], tuple[float, ...]] = {}
        self._backgrounds: dict[tuple[object, ...], Any] = {}

    def png(self, rows: pd.DataFrame, *, title: str, legend: bool = False) -> bytes:
        """PNG of ``rows`` (eps, robust_accuracy, ci_low, ci_high, norm; a line per model) titled ``title``.

        ``legend``: the models' legend outside the axes on the right, as :func:`curve_figure`
        draws it (the PNG is then byte for byte that figure's :func:`figure_png`).
        """
        if self._fig is None or self._ax is None:
            sns.set_theme(style="whitegrid", context="notebook")
            self._fig, self._ax = plt.subplots(figsize=CURVE_SIZE, dpi=self.dpi)
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
        margins = self._lay_out(legend)
        return self._blit(margins)

    def _lay_out(self, legend: bool) -> tuple[float, ...]:
        """``tight_layout`` from the default margins, as a fresh figure is laid out, or its earlier result.

        ``tight_layout`` measures every text of the figure (a quarter of a curve's time). Its
        result depends only on the texts around the axes: the axis limits (which fix the ticks
        and their labels at a given axes size), the axis labels, the legend's entries and the
        title's height (``tight_layout`` counts a title's width as a point). Curves that agree
        on all of these (the cells of one attack, the attacks of one norm) reuse the margins it
        found for the first of them.
        Returns the margins (``SUBPLOT_MARGINS`` order).
        """
        fig, ax = self._fig, self._ax
        assert fig is not None and ax is not None
        handles = ax.get_legend_handles_labels()[1] if legend else None
        key: tuple[object, ...] = (
            ax.get_xlim(),
            ax.get_ylim(),
            ax.get_xlabel(),
            ax.get_ylabel(),
            None if handles is None else tuple(handles),
        )
        if ax.title.get_text():  # layouts measure a title's height only: its width is collapsed to a point
            key = (*key, ax.title.get_window_extent(fig.canvas.get_renderer()).height)
        cached = self._layouts.get(key)
        if cached is not None:
            fig.subplots_adjust(**dict(zip(SUBPLOT_MARGINS, cached, strict=True)))
            return cached
        # Laid out anew from the default margins, as a fresh figure is (tick labels differ between grids).
        fig.subplots_adjust(**{k: plt.rcParams[f"figure.subplot.{k}"] for k in SUBPLOT_MARGINS})
        fig.tight_layout()
        self._layouts[key] = margins = tuple(float(getattr(fig.subplotpars, k)) for k in SUBPLOT_MARGINS)
        return margins

    def _blit(self, margins: tuple[float, ...]) -> bytes:
        """The PNG of the figure as laid out: its fixed part drawn once per layout, the curves drawn on a copy.

        The axes, grid, ticks and labels (two thirds of a draw) are the same for every curve of
        one layout, so they are drawn once (lines, bands, title and legend hidden) and kept;
        each curve restores that background and draws only its own artists, in the order a
        full draw would. Nothing of the curves touches the spines (the axes have margins), so
        the pixels are those of a full draw: a test compares them with :func:`figure_png`.
        """
        fig, ax = self._fig, self._ax
        assert fig is not None and ax is not None
        legend = ax.get_legend()
        moving: list[Artist] = [*ax.collections, *ax.lines, ax.title, *([legend] if legend is not None else [])]
        key = (*margins, ax.get_xlim(), ax.get_ylim(), ax.get_xlabel(), ax.get_ylabel())
        if fig.get_dpi() != self.dpi:
            fig.set_dpi(self.dpi)
        canvas = fig.canvas
        if key not in self._backgrounds:
            for artist in moving:
                artist.set_visible(False)
            try:
                canvas.draw()
            finally:
                for artist in moving:
                    artist.set_visible(True)
            if len(self._backgrounds) >= 8:
                self._backgrounds.pop(next(iter(self._backgrounds)))
            self._backgrounds[key] = canvas.copy_from_bbox(fig.bbox)
        canvas.restore_region(self._backgrounds[key])
        for artist in sorted(moving, key=lambda a: a.get_zorder()):  # stable: equal zorders keep their order
            ax.draw_artist(artist)
        return encode_canvas(fig)

    def close(self) -> None:
        if self._fig is not None:
            plt.close(self._fig)
        self._fig = self._ax = None

    def __enter__(self) -> CurvePainter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_KEPT_PAINTERS: dict[int, CurvePainter] = {}
"""Per dpi, the painter :func:`curve_pngs` keeps between calls when asked to."""


def heatmap_figure(table: pd.DataFrame, *, title: str = "") -> Figure:
    """Robust accuracy as a heatmap: ``table`` is models (index) x attacks (columns), values in [0, 1].

    Cells coloured on ``RdYlGn`` from 0 to 1 (missing cells blank), each annotated with its value
    to two decimals in black or white, whichever reads better on its colour; a colour bar on the
    right. Drawn with matplotlib directly: ``seaborn.heatmap`` draws the whole figure once more to
    decide whether tick labels overlap, a third of the figure's time.
    """
    sns.set_theme(style="white", context="notebook")
    values = table.astype(float).to_numpy()
    rows, cols = values.shape
    width = max(5.0, 1.3 * cols + 3.2)  # one attack: still room for the colour bar and its label
    height = max(2.6, 0.55 * rows + 1.6)
    fig, ax = plt.subplots(figsize=(width, height))
    cmap = plt.get_cmap("RdYlGn")
    mesh = ax.pcolormesh(np.ma.masked_invalid(values), cmap=cmap, vmin=0.0, vmax=1.0, edgecolors="white", linewidth=0.5)
    for (i, j), value in np.ndenumerate(values):
        if np.isfinite(value):
            light = relative_luminance(cmap(value)) > 0.408  # seaborn.heatmap's rule for the annotation colour
            ax.text(j + 0.5, i + 0.5, f"{value:.2f}", ha="center", va="center", color=".15" if light else "w")
    ax.set_xlim(0, cols)
    ax.set_ylim(rows, 0)  # first model on top
    ax.set_xticks(np.arange(cols) + 0.5, [str(c) for c in table.columns])
    ax.set_yticks(np.arange(rows) + 0.5, [str(i) for i in table.index], rotation=0, va="center")
    ax.tick_params(axis="both", length=0)
    ax.tick_params(axis="x", labelrotation=30 if cols > 3 else 0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    fig.colorbar(mesh, ax=ax, shrink=0.9, label="robust accuracy").outline.set_visible(False)
    ax.set_xlabel("attack")
    ax.set_ylabel("model")
    ax.set_title(title)
    fig.tight_layout()
    return fig
