"""A cell's ``examples.npz``, read with caps and checked before anything draws it.

Run directories are untrusted input (a copied or downloaded run can hold anything):
the arrays are read without pickles, their decompressed size is capped before they are
inflated, and their shapes, dtypes and class indices are checked, so that a hostile
file gives one clear error naming the file and the array instead of a hang (a class
index of 10**9 would make the report build a billion labels), a memory blow-up or a
traceback deep inside the drawing code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench import limits
from bench.npzfile import NpzError, read_npz_capped

EXAMPLE_KEYS = ("x", "y", "x_adv", "adv_pred", "epsilons")
"""The arrays every examples file holds (``bench.engine.cell.run_cell`` writes them; ``clean_pred`` is optional)."""

MAX_SIDE = 4096
"""Largest height or width of an example image, in pixels."""

MAX_CLASSES = 100_000
"""Class indices (``y``, ``adv_pred``, ``clean_pred``) must lie in ``[0, MAX_CLASSES)``."""


class ExamplesFileError(ValueError):
    """An examples file that is not what a run writes; the message names the file, the array and what is allowed."""


def read_examples_file(path: Path) -> dict[str, np.ndarray]:
    """The checked arrays of ``path`` (see :func:`check_examples`); at most :data:`limits.EXAMPLES_BYTES` inflated,
    by the zip's sizes and by every array header's (:func:`bench.npzfile.read_npz_capped`)."""
    try:
        arrays = read_npz_capped(path, limits.EXAMPLES_BYTES, what="examples file")
    except NpzError as exc:
        raise ExamplesFileError(str(exc)) from None
    check_examples(arrays, source=str(path))
    return arrays


def check_examples(arrays: dict[str, np.ndarray], *, source: str) -> None:
    """Refuse arrays that are not an examples file: shapes, dtypes, class indices and epsilons.

    ``x_adv`` ``(E, k, C, H, W)`` float with C 1 or 3 and H, W <= :data:`MAX_SIDE`;
    ``x`` ``(k, C, H, W)`` float; ``y`` ``(k,)`` and ``adv_pred`` ``(E, k)`` integer in
    ``[0, MAX_CLASSES)``; ``epsilons`` ``(E,)`` finite numbers.
    """
    missing = [key for key in EXAMPLE_KEYS if key not in arrays]
    if missing:
        raise ExamplesFileError(
            f"{source}: missing array(s) {', '.join(missing)} (an examples file holds {', '.join(EXAMPLE_KEYS)})"
        )
    x_adv = arrays["x_adv"]
    if x_adv.ndim != 5 or x_adv.dtype.kind != "f":
        raise ExamplesFileError(
            f"{source}: x_adv: expected floats of shape (epsilons, samples, channels, height, width), "
            f"got {x_adv.dtype} of shape {x_adv.shape}"
        )
    e, k, c, h, w = x_adv.shape
    if c not in (1, 3) or not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE):
        raise ExamplesFileError(
            f"{source}: x_adv: {c} channel(s) of {h} x {w} pixels (allowed: 1 or 3 channels, sides 1 to {MAX_SIDE})"
        )
    expected = {"x": ((k, c, h, w), "f"), "y": ((k,), "iu"), "adv_pred": ((e, k), "iu"), "epsilons": ((e,), "fiu")}
    if "clean_pred" in arrays:
        expected["clean_pred"] = ((k,), "iu")
    for key, (shape, kinds) in expected.items():
        array = arrays[key]
        if array.shape != shape or array.dtype.kind not in kinds:
            kind = "integers" if kinds == "iu" else "numbers"
            raise ExamplesFileError(
                f"{source}: {key}: expected {kind} of shape {shape}, got {array.dtype} {array.shape}"
            )
    for key in ("y", "adv_pred", "clean_pred"):
        values = arrays.get(key)
        if values is not None and values.size and (values.min() < 0 or values.max() >= MAX_CLASSES):
            raise ExamplesFileError(
                f"{source}: {key}: class indices from {values.min()} to {values.max()} "
                f"(allowed: 0 to {MAX_CLASSES - 1})"
            )
    if not np.isfinite(arrays["epsilons"]).all():
        raise ExamplesFileError(f"{source}: epsilons: not all finite")
