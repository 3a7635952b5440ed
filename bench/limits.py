"""The documented caps on everything the harness reads (docs/security.md, "Limits on input").

Suite files, included files, baselines and run directories are untrusted
input: each read goes through :func:`read_text_capped` (a regular file, at
most a fixed number of bytes, UTF-8), and the structures inside them are
capped here too, so that a small hostile file fails fast with one line naming
the file and field instead of hanging or exhausting memory. A leaf module:
it imports nothing from the project.
"""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

MiB = 1024 * 1024

SUITE_FILE_BYTES = 1 * MiB
"""A suite file or one of its ``include:`` files."""
INCLUDE_FILES = 64
"""Suite files read for one suite, the suite itself and all its includes (repeats counted)."""
YAML_DEPTH = 64
"""Nesting depth of one YAML file (mappings and lists)."""
YAML_NODES = 100_000
"""YAML nodes composed for one file, alias uses counted (an alias bomb expands past this)."""
YAML_ALIASES = 1_000
"""Alias uses (``*name``) in one YAML file."""
EPSILONS = 1_000
"""Values in one epsilon list (of a suite attack, a baseline cell)."""
BASELINE_FILE_BYTES = 64 * MiB
"""A baseline JSON file."""
BASELINE_CELLS = 10_000
"""Cells in one baseline."""
FLAG_SAMPLES = 10_000_000
"""Samples in a baseline's decompressed ``indices`` and in each point's per-sample ``flags``."""
INT_DIGITS = 30
"""Digits of any integer in a baseline or a run directory's JSON (larger ones are refused)."""
RUN_JSON_BYTES = 16 * MiB
"""A run directory's JSON or YAML file (manifest.json, models.json, suite.yaml)."""
RUN_TABLE_BYTES = 2048 * MiB
"""A run directory's parquet table (results.parquet, samples.parquet)."""
EXAMPLES_BYTES = 256 * MiB
"""A cell's examples.npz, inflated (checked before its arrays are decompressed)."""
NPZ_WEIGHTS_BYTES = 2048 * MiB
"""A model's ``.npz`` weights, inflated (checked before its arrays are decompressed)."""


class LimitError(ValueError):
    """An input over one of the documented caps; the message names the file, the field and the cap."""


class NJobsWarning(UserWarning):
    """``n_jobs`` asked for more workers than there are cores; it was lowered."""


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def cap_n_jobs(n_jobs: int, *, source: str = "n_jobs") -> int:
    """``n_jobs`` lowered to the number of cores (with a :class:`NJobsWarning`); -1, -2, ... pass unchanged."""
    limit = cores()
    if n_jobs > limit:
        warnings.warn(
            f"{source}: {n_jobs} workers asked for, but this machine has {limit} cores; using {limit}",
            NJobsWarning,
            stacklevel=2,
        )
        return limit
    return n_jobs


def check_regular_file(path: Path, *, what: str) -> os.stat_result:
    """``stat`` ``path`` and refuse anything but a regular file (a FIFO, a device, a folder)."""
    st = path.stat()  # FileNotFoundError / OSError reach the caller
    if not stat.S_ISREG(st.st_mode):
        raise LimitError(f"{path}: {what} must be a regular file (this is a folder, device, FIFO or socket)")
    return st


def check_table_size(path: str | Path, *, what: str) -> Path:
    """Refuse a run directory's table (parquet or CSV) that is not a regular file or exceeds :data:`RUN_TABLE_BYTES`.

    Checked before pandas/pyarrow open it: a table is read whole, so its size bounds the memory a read takes.
    """
    path = Path(path)
    size = check_regular_file(path, what=what).st_size
    if size > RUN_TABLE_BYTES:
        raise LimitError(f"{path}: {what} is larger than the limit of {_size(RUN_TABLE_BYTES)}")
    return path


def read_bytes_capped(path: str | Path, cap: int, *, what: str) -> bytes:
    """Read a regular file of at most ``cap`` bytes (also when it grows while read)."""
    path = Path(path)
    check_regular_file(path, what=what)
    # O_NONBLOCK: a file swapped for a FIFO after the stat must not block the open.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise LimitError(f"{path}: {what} must be a regular file")
        data = fh.read(cap + 1)
    if len(data) > cap:
        raise LimitError(f"{path}: {what} is larger than the limit of {_size(cap)}")
    return data


def read_text_capped(path: str | Path, cap: int, *, what: str) -> str:
    """:func:`read_bytes_capped` decoded as UTF-8; a decode error names the file and byte offset."""
    data = read_bytes_capped(path, cap, what=what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LimitError(f"{path}: {what} is not UTF-8 text (byte {exc.start}: {exc.reason})") from None


def parse_int_capped(text: str, *, source: str) -> int:
    """A ``json.loads(parse_int=...)`` hook that refuses integers of more than :data:`INT_DIGITS` digits."""
    if len(text.lstrip("-")) > INT_DIGITS:
        raise LimitError(f"{source}: an integer of {len(text.lstrip('-'))} digits (limit {INT_DIGITS})")
    return int(text)


def _size(n: int) -> str:
    return f"{n // MiB} MiB" if n >= MiB and n % MiB == 0 else f"{n} bytes"
