"""Atomic file writes: a reader sees the old file or the new one, never a torn one."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def safe_filename(text: str) -> str:
    """One file-name component from a suite-derived string (model or attack id, cell id).

    Names that are already safe (letters, digits, ``_ . -``, not starting with
    ``.`` or ``-``) are kept as they are; anything else (``art:DeepFool``,
    ``../x``, ``a/b``, empty) has its other characters replaced by ``-`` and
    gets an 8-digit hash of the original, so the result can never leave its
    folder (no separator, never ``.`` or ``..``) and two different names
    cannot share a file.
    """
    if text and _UNSAFE.search(text) is None and not text.startswith((".", "-")):
        return text
    stem = _UNSAFE.sub("-", text).strip(".-")[:80] or "name"
    return f"{stem}-{hashlib.sha256(text.encode('utf-8', 'surrogatepass')).hexdigest()[:8]}"


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import: os.umask can only be read by setting it, and setting it to 0 while
# another thread creates a file (threading backend) would make that file world-writable.
_UMASK = _read_umask()


@contextlib.contextmanager
def atomic_path(path: Path, *, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` with ``os.replace``.

    The file gets the permissions a plain ``open(path, "w")`` would give
    (``0666`` less the umask), not ``mkstemp``'s private ``0600``. On error the
    temporary file is removed and ``path`` is untouched.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
