"""CIFAR-10 from the python pickle batches, read by torchvision's ``CIFAR10``.

The root (``dataset.options.root`` or ``$BENCH_CIFAR10_ROOT``) is the folder
holding ``cifar-10-batches-py/`` (as ``cifar-10-python.tar.gz`` unpacks), or
that folder itself. It must contain ``data_batch_1`` ... ``data_batch_5``,
``test_batch`` and ``batches.meta``.

**Pickle.** These batches are Python pickles (the format CIFAR-10 ships in) and
torchvision unpickles them, which can run code from a crafted file. By default
(``verify: true``) torchvision first checks every batch against the official
MD5 sums, so only the genuine CIFAR-10 files are ever unpickled. Set
``verify: false`` only for files you made yourself (e.g. a subset).

Both splits keep the order they ship in (50,000 train / 10,000 test), values
``uint8 / 255`` in [0, 1], shape ``(N, 3, 32, 32)``.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from bench.data.files import check_options, resolve_root
from bench.data.split import SPLITS, DataError, DataSplit
from bench.types import Bounds

FOLDER = "cifar-10-batches-py"
BATCH_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta")
ENV = "BENCH_CIFAR10_ROOT"
OPTIONS = ("root", "download", "verify")


def _cifar10_class(verify: bool) -> type:
    from torchvision.datasets import CIFAR10  # torchvision: heavy, only for file-backed data sets

    if verify:
        return CIFAR10

    class UnverifiedCIFAR10(CIFAR10):
        """torchvision's reader with the MD5 checks off (for CIFAR-10-format files made locally)."""

        train_list: ClassVar[list[list[str | None]]] = [[name, None] for name, _ in CIFAR10.train_list]
        test_list: ClassVar[list[list[str | None]]] = [[name, None] for name, _ in CIFAR10.test_list]
        meta: ClassVar[dict[str, str | None]] = {**CIFAR10.meta, "md5": None}

    return UnverifiedCIFAR10


def _root_of(root: Path) -> Path:
    """Accept the folder holding ``cifar-10-batches-py`` or that folder itself."""
    if root.name == FOLDER and not (root / FOLDER).is_dir():
        return root.parent
    return root


@functools.lru_cache(maxsize=2)
def _read(split: str, root: str, download: bool, verify: bool) -> DataSplit:
    cls = _cifar10_class(verify)
    folder = Path(root) / FOLDER
    try:
        ds = cls(root, train=split == "train", download=download)
    except RuntimeError:
        missing = [f for f in BATCH_FILES if not (folder / f).is_file()]
        if missing:
            raise DataError(
                f"data set 'cifar10': {', '.join(missing)} not found in {folder}/. Unpack cifar-10-python.tar.gz "
                f"into {root}/ (it creates {FOLDER}/ with {', '.join(BATCH_FILES)}), "
                "or set 'download: true' in dataset.options"
            ) from None
        raise DataError(
            f"data set 'cifar10': the files in {folder}/ do not match the official CIFAR-10 MD5 sums; "
            "set 'verify: false' in dataset.options only if you made these files yourself"
        ) from None
    except (KeyError, ValueError, EOFError, OSError) as exc:
        raise DataError(f"data set 'cifar10': cannot read the batches in {folder}/ ({exc!r})") from None
    data = np.asarray(ds.data)  # (N, 32, 32, 3) uint8, torchvision transposed it to HWC
    labels = np.asarray(ds.targets, dtype=np.int64)
    if data.dtype != np.uint8 or data.shape[1:] != (32, 32, 3):
        raise DataError(f"data set 'cifar10': batches in {folder}/ hold {data.dtype} images of shape {data.shape[1:]}")
    if len(data) != len(labels):
        raise DataError(f"data set 'cifar10': batches in {folder}/ have {len(data)} images but {len(labels)} labels")
    classes = tuple(str(c) for c in ds.classes)
    if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
        raise DataError(f"data set 'cifar10': labels outside 0..{len(classes) - 1} in {folder}/")
    x = torch.from_numpy(np.ascontiguousarray(data.transpose(0, 3, 1, 2))).to(torch.float32).div_(255.0)
    source = f"torchvision CIFAR10 pickle batches from {folder} (MD5 {'verified' if verify else 'not verified'})"
    return DataSplit("cifar10", split, x, torch.from_numpy(labels), Bounds(0.0, 1.0), classes, source)


def load_cifar10(split: str, *, seed: int = 0, **options: Any) -> DataSplit:
    """CIFAR-10 50,000 / 10,000 from a local root (options.root or $BENCH_CIFAR10_ROOT), 3x32x32."""
    if split not in SPLITS:
        raise DataError(f"data set 'cifar10': unknown split {split!r} (allowed: {', '.join(SPLITS)})")
    check_options("cifar10", options, OPTIONS)
    root = resolve_root("cifar10", options, ENV)
    if root is None:
        raise DataError(
            f"data set 'cifar10': no data folder given. Set dataset.options.root in the suite or ${ENV} to the "
            f"folder holding {FOLDER}/ ({', '.join(BATCH_FILES)}), or set 'download: true' with a root"
        )
    return _read(split, str(_root_of(root)), bool(options.get("download", False)), bool(options.get("verify", True)))
