"""Data sets read from local files through torchvision: ``fashion-mnist``, ``mnist`` and ``cifar10``.

They register themselves lazily in :data:`bench.data.DATASETS` (see the end of
:mod:`bench.data`), so importing the harness never imports torchvision's data
code. Each yields a :class:`~bench.data.DataSplit` in [0, 1], in the order the
split ships (no shuffle: the first ``n`` samples of a split are always the same
ones). Nothing is downloaded unless a suite sets ``download: true``.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench.data import DataError


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
