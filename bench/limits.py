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


# -- amounts of work: every numeric field that sets how much a run computes -----------------------------------
WORK_CAPS: dict[str, int] = {
    "steps": 10_000,  # gradient steps of one attack run (bim, pgd, apgd, apgd_t, fooling_images, ...)
    "restarts": 100,  # runs per sample (bim, pgd, apgd, apgd_t)
    "n_target_classes": 1_000,  # apgd_t's target classes (at most the data set's classes minus one anyway)
    "max_iter": 100_000,  # queries or iterations (square; ART attacks' max_iter)
    "draws": 10_000,  # noise draws per sample and eps (uniform_noise, gaussian_noise, salt_pepper)
    "source_size": 100_000,  # adversarial_noise's source samples
    "max_eval": 1_000_000,  # ART's HopSkipJump and the like: model calls per sample
    "init_eval": 100_000,
    "nb_random_init": 1_000,  # ART's random restarts
    "num_random_init": 1_000,
    "max_translation": 1_000,
    "nb_grads": 1_000,
    "epochs": 1_000,  # training epochs of a recipe
    "adv_steps": 1_000,  # inner attack steps per training batch
}
"""Caps on the fields that set an amount of work, wherever they appear: an attack's parameters (a suite,
``--set``, a ``reliable`` member's ``member_params``, ``bench.evaluate``'s keyword arguments) and a recipe.
They are checked when the attack or recipe is built, so ``bench validate``, ``bench run`` and
``bench.evaluate`` refuse the same values with the same message. No suite can raise them."""
BATCH_SIZE = 1_000_000
"""Samples per model call (a suite's ``batch_size``, a recipe's, ``bench.evaluate``'s)."""
RESULT_ROWS = 100_000
"""Rows of a run directory's ``results.csv`` / ``results.parquet`` (cells x epsilons)."""
SAMPLE_ROWS = 50_000_000
"""Rows of a run directory's ``samples.parquet`` (cells x epsilons x samples)."""
THREADS_PER_CORE = 4
"""``bench perf --threads`` at most this many torch threads per core of the machine."""


def work_problem(field: str, value: object) -> str | None:
    """``"steps: 1000000000 is over the cap of 10000 ..."`` when ``value`` exceeds ``field``'s cap, else ``None``."""
    cap = WORK_CAPS.get(field)
    if cap is None or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if value > cap:
        return f"{field}: {value} is over the cap of {cap:,} (docs/security.md, Limits on input)"
    return None


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
