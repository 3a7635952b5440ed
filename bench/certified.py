"""The run directory's certified tables: ``certified.csv``/``.parquet`` and ``certified_samples.parquet``.

With ``certify:`` in a suite every (model, certifier) pair is a certification cell; its rows, one per eps, say
what fraction of the samples is proven robust (the lower side of the bracket) beside the attacks' robust
accuracy at the same eps and norm (the upper side), and the gap between them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bench import limits
from bench.rundir import RunDir, RunDirError, check_table_rows

CERTIFIED_COLUMNS = [
    "suite",
    "dataset",
    "split",
    "n",
    "model",
    "certifier",
    "certifier_name",
    "certifier_params",
    "kind",
    "norm",
    "eps",
    "clean_accuracy",
    "certified_accuracy",
    "certified_ci_low",
    "certified_ci_high",
    "attacked_accuracy",
    "attacked_by",
    "gap",
    "mean_radius",
    "abstained",
    "seconds",
    "seed",
    "device",
]
"""Columns of ``certified.csv``.

``kind``: ``bound`` (a proof for the model itself: ``ibp``, ``crown``) or ``smoothed`` (for the Gaussian-smoothed
classifier, with probability ``1 - alpha``). ``certified_accuracy``: the fraction of the ``n`` samples certified
at ``eps`` (a clean error is never certified); ``certified_ci_low``/``high``: its Wilson 95% interval.
``attacked_accuracy``: the lowest robust accuracy any attack of the run reached on this model at this eps and
norm, over the same samples (``attacked_by`` names it; ``nan`` and ``""`` when no attack matches), so true robust
accuracy lies in ``[certified_accuracy, attacked_accuracy]`` and ``gap`` is that bracket's width.
``mean_radius``: smoothing's mean certified L2 radius (``nan`` for bound certifiers); ``abstained``: samples
smoothing abstained on. ``seconds``: certification time at this eps (smoothing: its one certification, on the
first eps)."""

CERTIFIED_SAMPLE_COLUMNS = ["model", "certifier", "eps", "index", "label", "certified", "margin_lower", "radius"]
"""Columns of ``certified_samples.parquet``: ``index`` the sample's position in the data split; ``margin_lower``
the bound certifiers' lower bound of the smallest margin (``nan`` for smoothing); ``radius`` smoothing's certified
L2 radius (``nan`` for bound certifiers)."""

CERTIFIED_FILES = ("certified.csv", "certified.parquet", "certified_samples.parquet")
"""Written only by suites with ``certify:``; their sha256 joins the manifest's ``results_sha256`` then."""


def certified_paths(run: RunDir) -> tuple[Path, Path, Path]:
    """``(certified.csv, certified.parquet, certified_samples.parquet)`` of ``run``."""
    root = run.root
    return root / CERTIFIED_FILES[0], root / CERTIFIED_FILES[1], root / CERTIFIED_FILES[2]


def read_certified(run: RunDir) -> pd.DataFrame | None:
    """The certified rows of ``run`` (parquet, else CSV), or ``None`` for a run without ``certify:``."""
    csv, parquet, _ = certified_paths(run)
    table = parquet if parquet.exists() else csv
    if not table.exists():
        return None
    try:
        limits.check_table_size(table, what="certified table")
        check_table_rows(table, limits.RESULT_ROWS, what="certified rows")
        frame = pd.read_parquet(table) if table == parquet else pd.read_csv(table, keep_default_na=False)
    except limits.LimitError:
        raise
    except (OSError, ValueError) as exc:
        raise RunDirError(f"{table}: unreadable certified table ({type(exc).__name__}: {exc})") from None
    missing = [c for c in CERTIFIED_COLUMNS if c not in frame.columns]
    if missing:
        raise RunDirError(f"{table}: missing column(s) {', '.join(missing)} (expected: {', '.join(CERTIFIED_COLUMNS)})")
    numeric = ["n", "eps", "clean_accuracy", "certified_accuracy", "certified_ci_low", "certified_ci_high"]
    numeric += ["attacked_accuracy", "gap", "mean_radius", "abstained", "seconds"]
    for column in numeric:
        frame[column] = pd.to_numeric(frame[column].replace("", "nan"), errors="coerce")
    for column in (
        "clean_accuracy",
        "certified_accuracy",
        "certified_ci_low",
        "certified_ci_high",
        "attacked_accuracy",
    ):
        values = frame[column].to_numpy(dtype=float)
        bad = ~(np.isnan(values) | ((values >= 0) & (values <= 1)))
        if bad.any():
            raise RunDirError(f"{table}: {column}: {float(values[bad][0])!r} is not in [0, 1] (or empty)")
    return frame[CERTIFIED_COLUMNS]


def read_certified_samples(run: RunDir) -> pd.DataFrame | None:
    """The per-sample certificates of ``run``, or ``None`` without them."""
    path = certified_paths(run)[2]
    if not path.exists():
        return None
    try:
        limits.check_table_size(path, what="certified per-sample table")
        check_table_rows(path, limits.SAMPLE_ROWS, what="certified per-sample rows")
        return pd.read_parquet(path)
    except limits.LimitError:
        raise
    except (OSError, ValueError) as exc:
        raise RunDirError(f"{path}: unreadable certified per-sample table ({type(exc).__name__}: {exc})") from None
