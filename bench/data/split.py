"""One split of a data set in pixel space (:class:`DataSplit`) and the one sample-selection rule (:func:`select`).

Every data set yields float32 tensors ``x`` of shape ``(N, C, H, W)`` with
values in its declared :class:`~bench.types.Bounds` (normally [0, 1]) and int64
labels ``y`` of shape ``(N,)``. Normalization is the model's business, never
the data pipeline's (DESIGN.md, convention 1).
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from bench.types import Bounds

SPLITS = ("train", "test")


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


def check_split(name: str, split: str) -> None:
    """Raise :class:`DataError` unless ``split`` is one of :data:`SPLITS`."""
    if split not in SPLITS:
        raise DataError(f"data set {name!r}: unknown split {split!r} (allowed: {', '.join(SPLITS)})")


def select(split: DataSplit, *, offset: int = 0, n: int | None = None, limit: int | None = None) -> DataSplit:
    """The evaluated samples of ``split``: skip ``offset``, then the first ``min(n, limit)`` (either may be None).

    The one rule every part uses (suite runs, the MLflow input log, ``bench perf``,
    ``bench crosscheck``). ``offset``: samples skipped at the start of the split;
    ``indices`` keep positions in the full split, so pairing across runs stays
    honest. ``n``: the suite's ``dataset.n`` (must not exceed what is left after
    the offset); ``limit``: ``--limit``, a cap that may exceed the data.

    Raises:
        DataError: ``offset`` not below the size of the split, or ``n`` larger than the split.
    """
    if offset:
        if offset >= len(split):
            raise DataError(
                f"dataset.offset: {offset} is not below the size of the {split.split} split "
                f"of {split.name!r} ({len(split)} samples)"
            )
        split = replace(split, x=split.x[offset:], y=split.y[offset:], indices=split.indices[offset:])
    if n is not None and n > len(split):
        raise DataError(
            f"dataset.n: {n} is larger than the {split.split} split of {split.name!r} ({len(split)} samples)"
        )
    if limit is not None:
        n = min(n or limit, limit)
    return split.subset(n)
