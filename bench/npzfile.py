"""``.npz`` archives read without pickles and with a cap on what they inflate to.

An ``.npz`` is a zip of ``.npy`` members, and each member's header states its shape and
dtype: ``np.load`` allocates what the header states before it reads a byte of data, so
a 16-byte member claiming ``(10**7, 10**7)`` floats asks for 364 TiB. Here every
member's header is read first and the archive refused, with one line naming the file
and the member, when the zip sizes add up to more than the cap or a header states more
bytes than the cap or than its member holds; pickled objects are refused by
``np.lib.format.read_array(allow_pickle=False)``.
Examples files (``bench.examples_file``) and ``.npz`` weights (``model_zoo.external``)
are read through :func:`read_npz_capped`.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np

from bench import limits


class NpzError(ValueError):
    """An archive that is not a readable ``.npz`` of plain numeric arrays; the message names the file."""


def read_npz_capped(path: str | Path, cap: int, *, what: str) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` at ``path``, after checking that they inflate to at most ``cap`` bytes.

    The archive is opened once: each member's header is checked, then its array read from the
    same open file (a file swapped in between cannot skip the checks). Raises
    :class:`limits.LimitError` over the cap (zip sizes or a header's size) and :class:`NpzError`
    for anything else that is not an archive of plain arrays (encrypted members and unknown
    compression methods included).
    """
    path = Path(path)
    try:
        limits.check_regular_file(path, what=what)
        with zipfile.ZipFile(path) as archive:
            members = [info for info in archive.infolist() if not info.is_dir()]
            inflated = sum(info.file_size for info in members)
            if inflated > cap:
                raise limits.LimitError(f"{path}: {what} inflates to {inflated:,} bytes, over the limit of {cap:,}")
            arrays = {}
            for info in members:
                with archive.open(info) as member:
                    _checked_header(member, info, path=path, what=what, cap=cap)
                with archive.open(info) as member:
                    arrays[info.filename[: -len(".npy")]] = np.lib.format.read_array(member, allow_pickle=False)
            return arrays
    except (limits.LimitError, NpzError):
        raise
    except zipfile.BadZipFile:
        raise NpzError(f"{path}: not an .npz archive of arrays ({what})") from None
    except (OSError, ValueError, EOFError, MemoryError, RuntimeError, NotImplementedError) as exc:
        # RuntimeError: an encrypted member (its message is the member's whole ZipInfo: said shortly);
        # NotImplementedError: a compression method zipfile lacks
        reason = "a member is encrypted (password-protected archives are not read)" if "encrypted" in str(exc) else exc
        raise NpzError(f"{path}: unreadable {what} ({type(exc).__name__}: {reason})") from None


def _checked_header(member: zipfile.ZipExtFile, info: zipfile.ZipInfo, *, path: Path, what: str, cap: int) -> int:
    """Bytes the ``.npy`` member's header says its array takes; refuses headers that lie or exceed ``cap``.

    Object dtypes pass here: ``read_array(allow_pickle=False)`` refuses them before it reads them.
    """
    if not info.filename.endswith(".npy"):
        raise NpzError(f"{path}: {what}: member {info.filename!r} is not an .npy array")
    version = np.lib.format.read_magic(member)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(member)
    elif version in ((2, 0), (3, 0)):
        shape, _, dtype = np.lib.format.read_array_header_2_0(member)
    else:
        raise NpzError(f"{path}: {what}: member {info.filename!r} has .npy format {version}")
    if dtype.hasobject:
        return 0  # pickled objects: np.load(allow_pickle=False) refuses them before it reads them
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > cap:
        raise limits.LimitError(
            f"{path}: {what} holds arrays of {nbytes:,} bytes ({info.filename!r} states shape {shape}), "
            f"over the limit of {cap:,}"
        )
    if nbytes > info.file_size:
        raise NpzError(
            f"{path}: {what}: member {info.filename!r} states shape {shape} ({nbytes:,} bytes) "
            f"but holds {info.file_size:,} bytes"
        )
    return nbytes
