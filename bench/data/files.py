"""Data sets read from local files: MNIST and Fashion-MNIST (IDX files) and the helpers file-backed sets share.

They register themselves lazily in :data:`bench.data.DATASETS`, so importing
the harness never imports torchvision's data code. Each yields a
:class:`~bench.data.split.DataSplit` in [0, 1], in the order the split ships (no
shuffle: the first ``n`` samples of a split are always the same ones). Nothing
is downloaded unless a suite sets ``download: true``.

MNIST and Fashion-MNIST are read by torchvision's ``MNIST`` / ``FashionMNIST``.
Where the four IDX files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each optionally ``.gz``)
are looked for, first match wins:

1. ``dataset.options.root`` in the suite, else the environment variable
   (``BENCH_MNIST_ROOT`` / ``BENCH_FASHION_MNIST_ROOT``): either a torchvision
   root (files in ``<root>/MNIST/raw/`` or ``<root>/FashionMNIST/raw/``) or a
   folder holding the four files directly;
2. for ``fashion-mnist`` only: Debian's ``dataset-fashion-mnist`` package
   (``/usr/share/datasets/fashion-mnist/*.gz``).

torchvision reads only unzipped files from ``<root>/<Class>/raw/``; anything
else (gzipped files, a flat folder, the read-only Debian folder) is unzipped
once into ``$BENCH_CACHE/data/<name>-<key>/`` (atomically; the key hashes the
source files' paths, sizes and mtimes) and read from there.

Both splits keep the order they ship in (60,000 train / 10,000 test), values
``uint8 / 255`` in [0, 1], shape ``(N, 1, 28, 28)``.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from bench.data.split import SPLITS, DataError, DataSplit
from bench.types import Bounds


def data_cache_dir() -> Path:
    """Where decompressed data files go: ``$BENCH_CACHE/data`` (default ``~/.cache/bench/data``)."""
    root = os.environ.get("BENCH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "bench")
    return Path(root) / "data"


def check_options(name: str, options: dict[str, Any], allowed: Iterable[str]) -> None:
    """Raise :class:`DataError` naming unknown options and the allowed ones."""
    allowed = sorted(allowed)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise DataError(
            f"data set {name!r}: unknown option(s) {', '.join(unknown)} in dataset.options "
            f"(allowed: {', '.join(allowed)})"
        )
    for key in ("download", "verify"):
        if key in options and not isinstance(options[key], bool):
            raise DataError(f"data set {name!r}: dataset.options.{key} must be true or false, got {options[key]!r}")
    if "root" in options and not isinstance(options["root"], str | os.PathLike):
        raise DataError(f"data set {name!r}: dataset.options.root must be a folder path, got {options['root']!r}")


def resolve_root(name: str, options: dict[str, Any], env: str) -> Path | None:
    """``dataset.options.root``, else the environment variable ``env``, else ``None``.

    ``~`` and environment variables are expanded; a relative path is relative
    to the current directory.
    """
    raw = options.get("root") or os.environ.get(env)
    if not raw:
        return None
    return Path(os.path.expandvars(os.path.expanduser(str(raw)))).resolve()


def atomic_gunzip(src: Path, dst: Path) -> None:
    """Decompress ``src`` (or copy it, when it is not gzipped) to ``dst`` through a temporary file.

    Concurrent processes may race here: each writes its own temporary file and
    ``os.replace`` makes the last one win with identical content.
    """
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp")
    try:
        opener = gzip.open if src.suffix == ".gz" else open
        with os.fdopen(fd, "wb") as out, opener(src, "rb") as inp:
            shutil.copyfileobj(inp, out, length=1 << 20)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a shared cache must stay readable
        os.replace(tmp, dst)
    except OSError as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise DataError(f"cannot decompress {src} into {dst}: {exc}") from None
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def source_key(files: Iterable[Path]) -> str:
    """A short hash of where files are and what they are (path, size, mtime), naming a cache folder."""
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{f.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


# -- MNIST and Fashion-MNIST --------------------------------------------------------------------

IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
OPTIONS = ("root", "download")


def _locate(root: Path, folder: str) -> tuple[dict[str, Path], list[str]]:
    """Each IDX file's first match under ``root/folder/raw`` or ``root`` (plain before ``.gz``); and the missing."""
    found: dict[str, Path] = {}
    for name in IDX_FILES:
        raw = root / folder / "raw"
        for candidate in (raw / name, raw / f"{name}.gz", root / name, root / f"{name}.gz"):
            if candidate.is_file():
                found[name] = candidate
                break
    return found, [n for n in IDX_FILES if n not in found]


def torchvision_root(name: str, folder: str, root: Path) -> Path:
    """A folder torchvision can read (``<it>/<folder>/raw/<4 unzipped files>``), unzipping into the cache if needed."""
    found, missing = _locate(root, folder)
    if missing:
        raise DataError(
            f"data set {name!r}: {', '.join(missing)} not found under {root}. Put the four files "
            f"{', '.join(IDX_FILES)} (plain or .gz) into {root / folder / 'raw'}/ or directly into {root}/, "
            "or set 'download: true' in dataset.options to fetch them"
        )
    raw = root / folder / "raw"
    if all(found[n] == raw / n for n in IDX_FILES):
        return root
    cache = data_cache_dir() / f"{name}-{source_key(found[n] for n in IDX_FILES)}"
    for n in IDX_FILES:
        dst = cache / folder / "raw" / n
        if not dst.is_file():
            atomic_gunzip(found[n], dst)
    return cache


def _corrupt(name: str, root: str, folder: str, prefix: str, exc: BaseException) -> str:
    return (
        f"data set {name!r}: {root}/{folder}/raw/{prefix}-images-idx3-ubyte or {prefix}-labels-idx1-ubyte "
        f"is not a valid uint8 IDX file (magic 0x00000803 for images, 0x00000801 for labels): {exc!r}"
    )


@functools.lru_cache(maxsize=4)
def _read(name: str, folder: str, split: str, root: str, download: bool, source: str) -> DataSplit:
    from torchvision import datasets  # torchvision: heavy, only for file-backed data sets

    cls = {"MNIST": datasets.MNIST, "FashionMNIST": datasets.FashionMNIST}[folder]
    train = split == "train"
    prefix = "train" if train else "t10k"
    try:
        ds = cls(root, train=train, download=download)
    except RuntimeError as exc:
        if "not found" in str(exc):  # only reachable with download: true that fetched nothing usable
            raise DataError(f"data set {name!r}: torchvision found no files in {root}/{folder}/raw/: {exc}") from None
        raise DataError(_corrupt(name, root, folder, prefix, exc)) from None
    except (AssertionError, TypeError, ValueError) as exc:  # torchvision asserts on a bad IDX magic number
        raise DataError(_corrupt(name, root, folder, prefix, exc)) from None
    images, labels = ds.data, ds.targets
    if images.ndim != 3 or tuple(images.shape[1:]) != (28, 28):
        raise DataError(
            f"data set {name!r}: {prefix}-images-idx3-ubyte holds images of shape {tuple(images.shape[1:])}, "
            "expected (28, 28)"
        )
    if len(images) != len(labels):
        raise DataError(
            f"data set {name!r}: {prefix}-images-idx3-ubyte has {len(images)} images but "
            f"{prefix}-labels-idx1-ubyte has {len(labels)} labels"
        )
    classes = tuple(str(c) for c in cls.classes)
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= len(classes)):
        raise DataError(
            f"data set {name!r}: {prefix}-labels-idx1-ubyte has labels outside 0..{len(classes) - 1} "
            f"(min {int(labels.min())}, max {int(labels.max())})"
        )
    x = images.unsqueeze(1).to(torch.float32).div_(255.0)
    y = labels.to(torch.int64)
    return DataSplit(name, split, x, y, Bounds(0.0, 1.0), classes, f"{source}, {split} split in shipped order")


def _load(name: str, folder: str, env: str, split: str, options: dict[str, Any], default: Path | None) -> DataSplit:
    if split not in SPLITS:
        raise DataError(f"data set {name!r}: unknown split {split!r} (allowed: {', '.join(SPLITS)})")
    check_options(name, options, OPTIONS)
    download = bool(options.get("download", False))
    root = resolve_root(name, options, env)
    if download:
        if root is None:
            raise DataError(
                f"data set {name!r}: 'download: true' needs a folder to download into: "
                f"set dataset.options.root or ${env}"
            )
        return _read(name, folder, split, str(root), True, f"torchvision {folder} downloaded into {root}")
    if root is None:
        if default is None or not default.is_dir():
            where = f" (or install the Debian package dataset-fashion-mnist, read from {default})" if default else ""
            raise DataError(
                f"data set {name!r}: no data folder given. Set dataset.options.root in the suite or ${env} to a "
                f"folder holding {', '.join(IDX_FILES)} (plain or .gz, directly or in <root>/{folder}/raw/){where}, "
                "or set 'download: true' in dataset.options"
            )
        root = default
    readable = torchvision_root(name, folder, root)
    return _read(name, folder, split, str(readable), False, f"torchvision {folder} IDX files from {root}")


def load_mnist(split: str, *, seed: int = 0, **options: Any) -> DataSplit:
    """MNIST 60,000 / 10,000 from a local torchvision root (options.root or $BENCH_MNIST_ROOT), 1x28x28."""
    return _load("mnist", "MNIST", "BENCH_MNIST_ROOT", split, options, None)


def load_fashion_mnist(split: str, *, seed: int = 0, **options: Any) -> DataSplit:
    """Fashion-MNIST 60,000 / 10,000 from Debian's dataset-fashion-mnist or a torchvision root, 1x28x28."""
    return _load("fashion-mnist", "FashionMNIST", "BENCH_FASHION_MNIST_ROOT", split, options, DEBIAN_FASHION_MNIST)
