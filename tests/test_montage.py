"""Pillow montages of adversarial examples (reports.montage): pixels, label colours and layout."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from reports import montage


def _examples(e: int = 3, k: int = 4, c: int = 1, h: int = 8, w: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (k, c, h, w)).astype(np.float32)
    eps = np.linspace(0.0, 0.2, e).astype(np.float32)
    noise = rng.choice([-1.0, 1.0], (e, k, c, h, w)).astype(np.float32)
    x_adv = np.clip(x[None] + eps[:, None, None, None, None] * noise, 0, 1)
    y = np.arange(k) % 10
    pred = np.tile(y, (e, 1))
    pred[-1, 0] = (y[0] + 1) % 10  # the first sample is fooled at the largest eps only
    return {"x": x, "x_adv": x_adv, "y": y, "adv_pred": pred, "epsilons": eps}


def _colour_count(img: np.ndarray, rgb: tuple[int, int, int], box: tuple[int, int, int, int]) -> int:
    top, bottom, left, right = box
    part = img[top:bottom, left:right].astype(int)
    return int((np.abs(part - np.asarray(rgb)).sum(axis=-1) < 60).sum())


def _find(arr: np.ndarray, tile: np.ndarray) -> list[tuple[int, int]]:
    """Top-left corners where ``tile`` appears verbatim in ``arr``."""
    th, tw = tile.shape[:2]
    return [
        (r, c)
        for r in range(arr.shape[0] - th + 1)
        for c in range(arr.shape[1] - tw + 1)
        if np.array_equal(arr[r, c], tile[0, 0]) and np.array_equal(arr[r : r + th, c : c + tw], tile)
    ]


def test_example_grid_shows_every_tile_pixel_exactly_and_colours_each_label() -> None:
    ex = _examples()
    image = montage.example_grid(ex)
    assert image.mode == "RGB"
    arr = np.asarray(image)
    assert np.array_equal(np.asarray(montage.example_grid(ex)), arr)  # deterministic
    factor = montage.tile_scale(8, 8)
    assert factor == round(montage.TILE_PIXELS / 8)

    def label_above(row: int, sample: int) -> tuple[int, int, int, int]:
        tile = montage.upscale(montage.to_rgb8(ex["x_adv"][row, sample]), factor)
        ((top, left),) = _find(arr, tile)  # every tile appears exactly once
        return top - 20, top, left, left + tile.shape[1]

    fooled, kept, clean = label_above(2, 0), label_above(2, 1), label_above(0, 0)
    assert _colour_count(arr, montage.FOOLED, fooled) > 10 and _colour_count(arr, montage.CORRECT, fooled) == 0
    for box in (kept, clean):
        assert _colour_count(arr, montage.CORRECT, box) > 10 and _colour_count(arr, montage.FOOLED, box) == 0


def test_example_grid_limits_rows_and_samples_and_keeps_first_and_last_eps() -> None:
    ex = _examples(e=11, k=12)
    few = np.asarray(montage.example_grid(ex, max_samples=3, max_rows=4))
    many = np.asarray(montage.example_grid(ex, max_samples=8, max_rows=8))
    assert few.shape[1] < many.shape[1] and few.shape[0] < many.shape[0]
    assert list(montage.grid_rows(11, 4)) == [0, 3, 7, 10]
    assert list(montage.grid_rows(3, 8)) == [0, 1, 2]


def test_colour_images_keep_their_channels() -> None:
    ex = _examples(c=3, h=6, w=6)
    arr = np.asarray(montage.example_grid(ex))
    tile = montage.upscale(montage.to_rgb8(ex["x_adv"][0, 0]), montage.tile_scale(6, 6))
    assert not np.array_equal(tile[..., 0], tile[..., 1])  # really colour
    assert len(_find(arr, tile)) == 1


def test_first_image_strip_draws_the_perturbation_on_a_centred_diverging_scale() -> None:
    ex = _examples(e=3)
    arr = np.asarray(montage.first_image_strip(ex))
    delta = (ex["x_adv"][:, 0] - ex["x"][0][None]).mean(axis=1)
    limit = float(np.abs(delta).max())
    factor = montage.tile_scale(8, 8)
    for i in range(3):
        tile = montage.upscale(montage.diverging_rgb8(delta[i], limit), factor)
        assert _find(arr, tile), f"perturbation tile {i} missing"
    zero = montage.diverging_rgb8(np.zeros((2, 2)), 1.0)[0, 0]
    assert zero.min() > 230  # no perturbation: near white
    plus, minus = montage.diverging_rgb8(np.array([[1.0, -1.0]]), 1.0)[0]
    assert plus[0] > plus[2] and minus[2] > minus[0]  # brighter red, darker blue


def test_fooling_grid_marks_the_target_hit_red() -> None:
    ex = _examples(e=1, k=2)
    ex["adv_pred"] = np.array([[7, 1]])
    arr = np.asarray(montage.fooling_grid(ex, np.array([7, 3])))
    half = arr.shape[1] // 2
    assert _colour_count(arr, montage.FOOLED, (0, 40, 0, half)) > 10
    assert _colour_count(arr, montage.CORRECT, (0, 40, half, arr.shape[1])) > 10


def test_png_bytes_round_trip() -> None:
    image = montage.example_grid(_examples())
    back = Image.open(io.BytesIO(montage.png_bytes(image)))
    assert back.size == image.size and np.array_equal(np.asarray(back.convert("RGB")), np.asarray(image))


def test_large_images_are_shrunk_to_a_bounded_tile() -> None:
    """A 1,000 x 600 image (or a 1 x 4,096 one) is drawn at most MAX_TILE on its longer side, not at full size."""
    assert montage.tile_size(28, 28) == (112, 112) and montage.tile_size(8, 8) == (96, 96)
    assert montage.tile_size(1000, 600) == (montage.MAX_TILE, round(600 * montage.MAX_TILE / 1000))
    assert montage.tile_size(1, 4096) == (1, montage.MAX_TILE)
    ex = _examples(e=2, k=3, c=3, h=1000, w=600)
    image = montage.example_grid(ex)
    assert image.size[0] < 3 * (montage.MAX_TILE + 40) + 200 and image.size[1] < 2 * (montage.MAX_TILE + 40) + 40
    strip = np.asarray(montage.tile(montage.to_rgb8(ex["x_adv"][0, 0]), (4, 2)))
    assert strip.shape == (4, 2, 3)
    # the box filter averages: a shrunk tile of a uniform image keeps its value
    flat = np.full((3, 10, 10), 0.5, dtype=np.float32)
    assert np.all(np.asarray(montage.tile(montage.to_rgb8(flat), (5, 5))) == 128)
