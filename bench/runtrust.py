"""Run directories are checked before they are believed: their results' digests and their values' ranges.

A run directory is untrusted input (docs/security.md): it may be a colleague's copy, and its tables are plain
files anyone can edit. ``bench sync`` already refuses results changed after the run; ``bench report``,
``bench check`` and ``bench run --resume`` use the same check here:

* the sha256 of every result file present (``results.csv``, ``results.parquet``, ``samples.parquet``) must
  equal the one ``manifest.json`` recorded with the results, and a finished cell's ``rows.parquet`` and
  ``samples.parquet`` the ones its ``done.json`` recorded. ``--trust-edited`` accepts a mismatch for a user
  who edited a run on purpose; the report then says so on its first line;
* the values must be possible, edited or not: accuracies and rates in [0, 1] (or empty), finite epsilons
  >= 0, counts whole and >= 0, intervals that hold their estimate, at most :data:`bench.limits.RESULT_ROWS`
  rows. A value outside these is refused whatever the flag.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench import limits
from bench.rundir import RunDir, RunError, check_table_rows
from bench.runstate import RESULT_FILES, digest_mismatch, recorded_files, sha256_file

CELL_FILES = ("rows.parquet", "samples.parquet")
"""A finished cell's tables, whose sha256 its ``done.json`` records (``sha256``)."""
TRUST_EDITED = "pass --trust-edited to use an edited run on purpose"
UNIT_COLUMNS = (
    "clean_accuracy",
    "robust_accuracy",
    "ci_low",
    "ci_high",
    "robust_accuracy_pointwise",
    "attack_success_rate",
)
"""Result columns that are fractions: in [0, 1], or empty (NaN: no clean-correct sample)."""
NONNEGATIVE_COLUMNS = ("mean_linf", "max_linf", "mean_l2", "max_l2", "grad_evals", "seconds")


class EditedRunError(RunError):
    """Results whose sha256 differs from the recorded one (changed after the run); ``--trust-edited`` accepts them."""


def check_results_digests(run: RunDir, manifest: dict[str, Any], *, trust_edited: bool = False) -> str | None:
    """Each result file present against ``manifest['results_sha256']``.

    Returns ``None`` when they match, or the one-line reason when ``trust_edited`` accepts a mismatch (for the
    report's first line); raises :class:`EditedRunError` otherwise.
    """
    recorded = manifest.get("results_sha256")
    if not isinstance(recorded, dict):
        problem = f"{run.manifest}: results_sha256: no digests of the results recorded, so they cannot be checked"
    else:
        # MLflow downloads lack some; a certified table recorded but deleted, or added unrecorded, is a mismatch
        present = [name for name in recorded_files(run, recorded) if (run.root / name).exists() or name in recorded]
        present = [n for n in present if n not in RESULT_FILES or (run.root / n).exists()]
        problem = digest_mismatch(run.root, recorded, present, where="manifest.json")
    return _verdict(problem, trust_edited=trust_edited, refusing="refusing to believe them")


def _verdict(problem: str | None, *, trust_edited: bool, refusing: str) -> str | None:
    """``None`` without a problem; the problem when ``trust_edited`` accepts it; else :class:`EditedRunError`."""
    if problem is not None and not trust_edited:
        raise EditedRunError(f"{problem}; {refusing} ({TRUST_EDITED})")
    return problem


def cell_digests(folder: Path) -> dict[str, str]:
    """sha256 of a finished cell's :data:`CELL_FILES`, for its ``done.json``."""
    return {name: sha256_file(folder / name) for name in CELL_FILES}


def check_cell_digests(folder: Path, done: dict[str, Any], *, trust_edited: bool = False) -> str | None:
    """A finished cell's tables against its ``done.json`` (``sha256``); as :func:`check_results_digests`."""
    recorded = done.get("sha256")
    if not isinstance(recorded, dict):
        problem = (
            f"{folder / 'done.json'}: sha256: no digests of the cell's tables recorded (a cell finished by a bench "
            "from before cells recorded them, or an edited record), so they cannot be checked"
        )
    else:
        problem = digest_mismatch(folder, recorded, CELL_FILES, where="done.json")
    return _verdict(problem, trust_edited=trust_edited, refusing="refusing to resume from it")


def check_result_values(results: pd.DataFrame, source: Path | str) -> None:
    """Refuse result rows no run can produce (one line naming the file, the column and the value)."""
    if len(results) > limits.RESULT_ROWS:
        raise RunError(f"{source}: {len(results):,} result rows, over the cap of {limits.RESULT_ROWS:,}")
    for column in UNIT_COLUMNS:
        if column in results.columns:
            _check(results, column, source, lambda v: np.isnan(v) | ((v >= 0) & (v <= 1)), "in [0, 1] (or empty)")
    if "eps" in results.columns:
        _check(results, "eps", source, lambda v: np.isfinite(v) & (v >= 0), "a finite number >= 0")
    for column in NONNEGATIVE_COLUMNS:
        if column in results.columns:
            _check(results, column, source, lambda v: np.isnan(v) | (np.isfinite(v) & (v >= 0)), ">= 0")
    if "n" in results.columns:
        _check(results, "n", source, lambda v: np.isfinite(v) & (v >= 0) & (v == np.round(v)), "a whole number >= 0")
    if {"ci_low", "ci_high", "robust_accuracy"} <= set(results.columns):
        rows = results[["ci_low", "robust_accuracy", "ci_high"]].to_numpy(dtype=float)
        known = ~np.isnan(rows).any(axis=1)
        bad = known & ~((rows[:, 0] <= rows[:, 1] + 1e-9) & (rows[:, 1] <= rows[:, 2] + 1e-9))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise RunError(
                f"{source}: row {i}: robust_accuracy {rows[i, 1]:g} outside its interval "
                f"[{rows[i, 0]:g}, {rows[i, 2]:g}] (an edited or corrupt table)"
            )


def check_sample_rows(samples: pd.DataFrame, source: Path | str) -> None:
    """Refuse a per-sample table over :data:`bench.limits.SAMPLE_ROWS` rows or with impossible values."""
    if len(samples) > limits.SAMPLE_ROWS:
        raise RunError(f"{source}: {len(samples):,} per-sample rows, over the cap of {limits.SAMPLE_ROWS:,}")
    if "eps" in samples.columns:
        _check(samples, "eps", source, lambda v: np.isfinite(v) & (v >= 0), "a finite number >= 0")


def _check(frame: pd.DataFrame, column: str, source: Path | str, ok: Any, allowed: str) -> None:
    try:
        values = pd.to_numeric(frame[column], errors="raise").to_numpy(dtype=float)
    except (TypeError, ValueError):
        raise RunError(f"{source}: column {column}: not numbers (allowed: {allowed})") from None
    with np.errstate(invalid="ignore"):
        bad = ~ok(values)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise RunError(f"{source}: row {i}: {column} {values[i]:g} is not possible (allowed: {allowed})")


def check_run(run: RunDir, *, trust_edited: bool = False) -> str | None:
    """A run directory's results checked before a command believes them (``bench check``, ``bench baseline``).

    The digests (:func:`check_results_digests`), the result values (:func:`check_result_values`) and the
    per-sample table's row count (from its parquet footer, without reading it). Returns the edit that
    ``trust_edited`` accepted, else ``None``.
    """
    manifest = run.read_manifest()
    note = check_results_digests(run, manifest, trust_edited=trust_edited)
    resumed_from = manifest.get("edited")  # finished with fresh digests, but resumed from edited cells
    if isinstance(resumed_from, list) and resumed_from:
        problem = f"{run.manifest}: edited: the run was resumed from edited cells ({resumed_from[0]})"
        _verdict(problem, trust_edited=trust_edited, refusing="refusing to believe it")
        note = "; ".join([*([note] if note else []), problem])
    source = run.results_parquet if run.results_parquet.exists() else run.results_csv
    check_result_values(run.read_results(), source)
    if run.samples.exists():  # its row count from the footer, without reading it (the gate reads it next)
        table = limits.check_table_size(run.samples, what="per-sample table")
        try:
            check_table_rows(table, limits.SAMPLE_ROWS, what="per-sample rows")
        except limits.LimitError:
            raise  # one line naming the file and the cap
        except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            raise RunError(f"{run.samples}: unreadable per-sample table ({type(exc).__name__}: {exc})") from None
    return note


def edited_banner(note: str) -> str:
    """The first line of a Markdown output (report, gate summary) about an edited run."""
    return f"> **EDITED RUN: results changed after the run, used because of --trust-edited.** {note}\n\n"


def read_cell_table(path: Path, *, what: str, rows: int) -> pd.DataFrame:
    """A finished cell's parquet table, size and row count capped before it is read; an unreadable file (one
    ``--trust-edited`` let through) is one :class:`RunError` line naming it, not a traceback."""
    try:
        check_table_rows(limits.check_table_size(path, what=what), rows, what=f"{what} rows")
        return pd.read_parquet(path)
    except limits.LimitError:
        raise
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise RunError(f"{path}: unreadable {what} ({type(exc).__name__}: {exc})") from None
