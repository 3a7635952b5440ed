"""Image montages of adversarial examples, drawn with Pillow instead of matplotlib.

An example grid is a picture of pictures with a few coloured labels: drawn
pixel by pixel (nearest-neighbour upscaled tiles on a white canvas, text in
matplotlib's bundled DejaVu Sans) it costs a few milliseconds, where a
matplotlib figure of the same grid costs a third of a second to lay out and
rasterize. A suite run draws two per cell, so this is most of a report's time.

Every function returns a ``PIL.Image.Image`` in RGB; :func:`png_bytes` encodes it.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from matplotlib import colormaps, font_manager
from PIL import Image, ImageDraw, ImageFont

CORRECT = (26, 127, 55)  # "#1a7f37": a label still correct
FOOLED = (207, 34, 46)  # "#cf222e": a label fooled
INK = (36, 41, 47)
WHITE = (255, 255, 255)
assert len(set(WHITE)) == 1, "white_canvas fills one byte value"

TILE_PIXELS = 100
"""Tiles are upscaled by the integer factor that brings their longer side closest to this (28x28 -> 112)."""


@lru_cache(maxsize=8)
def font(size: int) -> ImageFont.FreeTypeFont:
    """DejaVu Sans (shipped with matplotlib, so present wherever the reports run) at ``size`` pixels."""
    return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)


def png_bytes(image: Image.Image) -> bytes:
    """``image`` as PNG bytes; every PNG of the reports and the figures is encoded here (zlib level 3:
    half the time of the default 6, files about 10-15% larger)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


def tile_scale(h: int, w: int) -> int:
    """The integer upscaling factor of an ``h`` x ``w`` tile (at least 1)."""
    return max(1, round(TILE_PIXELS / max(h, w)))


def to_rgb8(img: np.ndarray) -> np.ndarray:
    """``(..., C, H, W)`` in [0, 1] (C = 1 or 3) -> ``(..., H, W, 3)`` uint8, values clipped to [0, 1] first."""
    img = np.clip(np.nan_to_num(img, nan=0.0), 0.0, 1.0)
    hwc = np.moveaxis(img[..., :3, :, :], -3, -1)
    if hwc.shape[-1] == 1:
        hwc = np.repeat(hwc, 3, axis=-1)
    return (hwc * 255.0 + 0.5).astype(np.uint8)


def diverging_rgb8(delta: np.ndarray, limit: float) -> np.ndarray:
    """``(..., H, W)`` signed values -> ``(..., H, W, 3)`` uint8 on ``RdBu_r`` (0 white, ``±limit`` saturated)."""
    scaled = 0.5 + 0.5 * np.clip(delta / (limit or 1.0), -1.0, 1.0)
    return (colormaps["RdBu_r"](scaled)[..., :3] * 255.0 + 0.5).astype(np.uint8)


def white_canvas(height: int, width: int) -> np.ndarray:
    """A ``(height, width, 3)`` uint8 canvas of :data:`WHITE`.

    Filled with one byte value (a memset): ``np.full`` with the RGB tuple broadcasts it pixel by
    pixel, 70 times slower, and holds the GIL that the report's main thread needs meanwhile.
    """
    return np.full((height, width, 3), WHITE[0], dtype=np.uint8)


def upscale(tile: np.ndarray, factor: int) -> np.ndarray:
    """``(..., H, W, 3)`` -> ``(..., H * factor, W * factor, 3)`` by pixel repetition (no smoothing)."""
    return tile.repeat(factor, axis=-3).repeat(factor, axis=-2)


MAX_TILE = 256
"""Longest side of a drawn tile: larger images are shrunk (a grid of 8 x 8 ImageNet-size or larger
images stays a few megapixels)."""


def tile_size(h: int, w: int) -> tuple[int, int]:
    """``(height, width)`` of the drawn tile of an ``h`` x ``w`` image: upscaled by :func:`tile_scale`,
    or shrunk to :data:`MAX_TILE` on its longer side."""
    factor = tile_scale(h, w)
    if max(h, w) * factor <= MAX_TILE:
        return h * factor, w * factor
    shrink = MAX_TILE / max(h, w)
    return max(1, round(h * shrink)), max(1, round(w * shrink))


def tile(rgb8: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """``(H, W, 3)`` uint8 drawn at ``size``: pixel repetition when upscaled, a box filter when shrunk."""
    h, w = rgb8.shape[:2]
    factor = size[0] // h
    if factor >= 1 and size == (h * factor, w * factor):
        return Image.fromarray(upscale(rgb8, factor))
    return Image.fromarray(rgb8).resize((size[1], size[0]), Image.Resampling.BOX)


def tiles(rgb8: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(..., H, W, 3)`` uint8 -> ``(..., *size, 3)``: :func:`tile` of every image, upscaled all at once."""
    h, w = rgb8.shape[-3:-1]
    factor = size[0] // h
    if factor >= 1 and size == (h * factor, w * factor):
        return upscale(rgb8, factor)
    flat = rgb8.reshape(-1, h, w, 3)
    shrunk = [np.asarray(tile(image, size)) for image in flat]
    return np.stack(shrunk).reshape(*rgb8.shape[:-3], *size, 3)


def class_names_for(class_names: Sequence[str] | None, *arrays: np.ndarray) -> list[str]:
    """``class_names`` or ``"0" .. "K"`` up to the largest class index in ``arrays``."""
    if class_names is not None:
        return list(class_names)
    top = max((int(np.max(a, initial=0)) for a in arrays if np.size(a)), default=0)
    return [str(i) for i in range(top + 1)]


def grid_rows(n_eps: int, max_rows: int) -> np.ndarray:
    """Indices of at most ``max_rows`` epsilons, evenly spread, always the first and the last."""
    if n_eps <= max_rows:
        return np.arange(n_eps)
    return np.unique(np.linspace(0, n_eps - 1, max_rows).round().astype(int))


def _text_width(draw: ImageDraw.ImageDraw, text: str, face: ImageFont.FreeTypeFont) -> int:
    left, _, right, _ = draw.textbbox((0, 0), text, font=face)
    return int(right - left)


def example_grid(
    examples: dict[str, np.ndarray],
    *,
    class_names: Sequence[str] | None = None,
    max_samples: int = 8,
    max_rows: int = 8,
    title: str = "",
) -> Image.Image:
    """Rows are epsilons, columns samples; a tile's label ``true→predicted`` is green if correct, red if fooled.

    ``examples`` holds ``x_adv`` ``(E, k, C, H, W)`` in [0, 1], ``y`` ``(k,)``,
    ``adv_pred`` ``(E, k)`` and ``epsilons`` ``(E,)`` as written by the runner.
    At most ``max_rows`` epsilons (evenly spread, first and last kept) and
    ``max_samples`` samples are shown.
    """
    x_adv, y, pred, eps = examples["x_adv"], examples["y"], examples["adv_pred"], examples["epsilons"]
    rows = grid_rows(x_adv.shape[0], max_rows)
    k = max(1, min(max_samples, x_adv.shape[1]))
    shown = min(k, x_adv.shape[1])
    h, w = x_adv.shape[-2:]
    th, tw = size = tile_size(h, w)
    small, label_face = font(14), font(15)
    names = class_names_for(class_names, y, pred)
    eps_labels = [f"eps={float(eps[r]):.3g}" for r in rows]
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    margin_left = max(_text_width(probe, s, small) for s in eps_labels) + 16
    gap_x, label_h, gap_y = max(8, tw // 10), 22, 10
    title_h = 28 if title else 8
    width = margin_left + k * (tw + gap_x)
    height = title_h + len(rows) * (label_h + th + gap_y)
    pixels = white_canvas(height, width)
    drawn = tiles(to_rgb8(x_adv[rows, :shown]), size)  # (rows, shown, th, tw, 3), all at once
    for i in range(len(rows)):
        top = title_h + i * (label_h + th + gap_y) + label_h
        for j in range(shown):
            left = margin_left + j * (tw + gap_x)
            pixels[top : top + th, left : left + tw] = drawn[i, j]
    canvas = Image.fromarray(pixels)
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((width // 2, 6), title, fill=INK, font=font(17), anchor="ma")
    for i, r in enumerate(rows):
        top = title_h + i * (label_h + th + gap_y)
        draw.text((margin_left - 10, top + label_h + th // 2), eps_labels[i], fill=INK, font=small, anchor="rm")
        for j in range(shown):
            left = margin_left + j * (tw + gap_x)
            truth, seen = int(y[j]), int(pred[r, j])
            draw.text(
                (left + tw // 2, top + label_h - 4),
                f"{names[truth]}→{names[seen]}",
                fill=CORRECT if seen == truth else FOOLED,
                font=label_face,
                anchor="mb",
            )
    return canvas


def first_image_strip(
    examples: dict[str, np.ndarray], *, class_names: Sequence[str] | None = None, title: str = ""
) -> Image.Image:
    """The first example image perturbed at each eps (top) and its perturbation ``x_adv - x`` (bottom).

    The perturbation (channels averaged) is drawn on a diverging scale centred on
    0 and shared by all columns (red brighter, blue darker), so its growth with
    eps is visible; the scale's limit is written at the left. ``examples`` as in
    :func:`example_grid` plus ``x`` ``(k, C, H, W)``; needs at least one example.
    """
    x, x_adv, y, pred, eps = (examples[key] for key in ("x", "x_adv", "y", "adv_pred", "epsilons"))
    e = x_adv.shape[0]
    delta = (x_adv[:, 0] - x[0][None]).mean(axis=1)  # (E, H, W)
    limit = float(np.abs(delta).max()) or 1.0
    h, w = x_adv.shape[-2:]
    th, tw = size = tile_size(h, w)
    small = font(14)
    names = class_names_for(class_names, y, pred)
    margin_left, gap_x, caption_h, gap_y = 104, max(10, tw // 6), 42, 12
    title_h = 28 if title else 6
    width = margin_left + e * (tw + gap_x)
    height = title_h + caption_h + 2 * th + gap_y + 6
    top = title_h + caption_h
    bottom = top + th + gap_y
    pixels = white_canvas(height, width)
    adversarial, perturbation = tiles(to_rgb8(x_adv[:, 0]), size), tiles(diverging_rgb8(delta, limit), size)
    for i in range(e):
        left = margin_left + i * (tw + gap_x)
        pixels[top : top + th, left : left + tw] = adversarial[i]
        pixels[bottom : bottom + th, left : left + tw] = perturbation[i]
    canvas = Image.fromarray(pixels)
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((width // 2, 6), title, fill=INK, font=font(17), anchor="ma")
    draw.text((margin_left - 10, top + th // 2), "adversarial", fill=INK, font=small, anchor="rm")
    draw.multiline_text(
        (margin_left - 10, bottom + th // 2),
        f"x_adv - x\n(±{limit:.2g})",
        fill=INK,
        font=small,
        anchor="rm",
        align="right",
    )
    truth = int(y[0])
    for i in range(e):
        left = margin_left + i * (tw + gap_x)
        seen = int(pred[i, 0])
        draw.multiline_text(
            (left + tw // 2, top - 4),
            f"eps={float(eps[i]):.3g}\n{names[truth]}→{names[seen]}",
            fill=CORRECT if seen == truth else FOOLED,
            font=small,
            anchor="md",
            align="center",
        )
    return canvas


def fooling_grid(
    examples: dict[str, np.ndarray],
    targets: np.ndarray | None = None,
    *,
    class_names: Sequence[str] | None = None,
    max_samples: int = 8,
    title: str = "",
) -> Image.Image:
    """Synthesized (fooling) images at the largest eps, each captioned with the class the model sees.

    Red when the model predicts the target class (the synthesis fooled it),
    green otherwise. ``targets`` ``(k,)`` (-1 or ``None``: untargeted, red
    whenever the prediction differs from the label). ``examples`` as in
    :func:`example_grid`.
    """
    x_adv, y, pred = examples["x_adv"][-1], examples["y"], examples["adv_pred"][-1]
    k = max(1, min(max_samples, x_adv.shape[0]))
    h, w = x_adv.shape[-2:]
    th, tw = size = tile_size(h, w)
    seen_targets = np.asarray([] if targets is None else targets, dtype=np.int64).ravel()
    names = class_names_for(class_names, y, pred, seen_targets)
    small = font(14)
    gap_x, caption_h = max(10, tw // 6), 24
    title_h = 28 if title else 6
    width = gap_x + k * (tw + gap_x)
    canvas = Image.new("RGB", (width, title_h + caption_h + th + 8), WHITE)
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((width // 2, 6), title, fill=INK, font=font(17), anchor="ma")
    top = title_h + caption_h
    for c in range(min(k, x_adv.shape[0])):
        left = gap_x + c * (tw + gap_x)
        canvas.paste(tile(to_rgb8(x_adv[c]), size), (left, top))
        target = int(targets[c]) if targets is not None and c < len(targets) else -1
        fooled = int(pred[c]) == target if target >= 0 else int(pred[c]) != int(y[c])
        caption = f"→{names[int(pred[c])]}" + (f" (t={names[target]})" if target >= 0 else "")
        draw.text((left + tw // 2, top - 4), caption, fill=FOOLED if fooled else CORRECT, font=small, anchor="mb")
    return canvas
