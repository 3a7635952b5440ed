"""Figures of a report, encoded to PNG once and written under ``figures/`` with unique names."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure
from PIL import Image

from reports import figures as figs
from reports import montage


@dataclass(frozen=True)
class RenderedFigure:
    """A figure rendered once to PNG; ``path`` is relative to the report folder."""

    caption: str
    path: str
    png: bytes

    @property
    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


class FigureWriter:
    """Renders figures to PNG once, writes them under ``figures/`` and names them uniquely."""

    def __init__(self, out: Path, dpi: int) -> None:
        self.dir = out / "figures"
        self.dpi = dpi
        self.used: set[str] = set()
        # A report re-rendered into the same folder must not keep figures of the previous one.
        for stale in self.dir.glob("*.png"):
            stale.unlink()

    def add(self, fig: Figure | Image.Image, name: str, caption: str) -> RenderedFigure:
        """Encode ``fig`` (a matplotlib figure, closed here, or a Pillow montage) and write it once."""
        png = montage.png_bytes(fig) if isinstance(fig, Image.Image) else figs.figure_png(fig, dpi=self.dpi)
        return self.add_png(png, name, caption)

    def add_png(self, png: bytes, name: str, caption: str) -> RenderedFigure:
        """Write an encoded PNG as ``figures/<name>.png`` (name made file-safe, ``-2``, ``-3`` ... if taken)."""
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "figure"
        unique, i = stem, 1
        while unique in self.used:
            i += 1
            unique = f"{stem}-{i}"
        self.used.add(unique)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / f"{unique}.png").write_bytes(png)
        return RenderedFigure(caption, f"figures/{unique}.png", png)
