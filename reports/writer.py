"""Figures of a report, encoded to PNG once and written under ``figures/`` with unique names."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
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
    """Renders figures to PNG once, writes them under ``figures/`` and names them uniquely.

    Pillow montages can be drawn on a background thread (:meth:`submit`) while the caller draws
    matplotlib figures and builds tables: Pillow encodes PNGs (half of a montage's time) without
    holding the GIL, so that part overlaps the caller's work (the report of
    ``suites/attacks_mnist.yaml``: 3.2 s -> 2.8 s on two cores). One thread: montages share
    their fonts. Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, out: Path, dpi: int) -> None:
        self.dir = out / "figures"
        self.dpi = dpi
        self.used: set[str] = set()
        self._pool: ThreadPoolExecutor | None = None
        # A report re-rendered into the same folder must not keep figures of the previous one.
        for stale in self.dir.glob("*.png"):
            stale.unlink()

    def add(self, fig: Figure | Image.Image, name: str, caption: str) -> RenderedFigure:
        """Encode ``fig`` (a matplotlib figure, closed here, or a Pillow montage) and write it once."""
        png = montage.png_bytes(fig) if isinstance(fig, Image.Image) else figs.figure_png(fig, dpi=self.dpi)
        return self.add_png(png, name, caption)

    def add_png(self, png: bytes, name: str, caption: str) -> RenderedFigure:
        """Write an encoded PNG as ``figures/<name>.png`` (name made file-safe, ``-2``, ``-3`` ... if taken)."""
        return self._write(png, self._reserve(name), caption)

    def submit(self, draw: Callable[[], Image.Image], name: str, caption: str) -> Future[RenderedFigure]:
        """Draw, encode and write a Pillow montage on the writer's thread; its name is taken now."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-montage")
        unique = self._reserve(name)
        return self._pool.submit(lambda: self._write(montage.png_bytes(draw()), unique, caption))

    def close(self) -> None:
        """Stop the thread: a montage being drawn finishes, queued ones are dropped (results not yet read
        are lost, so read every future first)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> FigureWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _reserve(self, name: str) -> str:
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "figure"
        unique, i = stem, 1
        while unique in self.used:
            i += 1
            unique = f"{stem}-{i}"
        self.used.add(unique)
        return unique

    def _write(self, png: bytes, unique: str, caption: str) -> RenderedFigure:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / f"{unique}.png").write_bytes(png)
        return RenderedFigure(caption, f"figures/{unique}.png", png)
