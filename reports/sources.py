"""Where a report's data come from: run directories (MLflow parent runs are downloaded into one by bench.tracking).

A :class:`RunData` holds everything the report reads from one run: the tidy
results, the per-sample flags (when present), the manifest, the models'
records, the resolved suite, the cross-check table (when the suite asked for
one) and the adversarial examples of every cell.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.certified import read_certified
from bench.rundir import RESULT_COLUMNS, SAMPLE_COLUMNS, RunDir, cell_id, open_run_dir
from bench.runtrust import check_result_values, check_results_digests, check_sample_rows


class ReportError(ValueError):
    """A report source that cannot be read; the message names the file or run and what is wrong."""


@dataclass
class RunData:
    """One run, as the report sees it.

    ``results``: RESULT_COLUMNS rows; ``samples``: SAMPLE_COLUMNS rows or ``None``
    (runs mirrored to MLflow before samples were logged); ``examples`` maps a cell
    id (``<model>__<attack>``) to its ``examples.npz`` arrays.
    """

    label: str
    root: Path
    results: pd.DataFrame
    manifest: dict[str, Any]
    suite: dict[str, Any]
    models: dict[str, Any] = field(default_factory=dict)
    samples: pd.DataFrame | None = None
    crosscheck: pd.DataFrame | None = None
    examples: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    mlflow_run_id: str | None = None
    edited: str | None = None
    """Why the results do not match their recorded sha256, when ``--trust-edited`` accepted them (else None)."""
    certified: pd.DataFrame | None = None
    """``certified.csv`` rows (a suite with ``certify:``), else ``None``."""

    @property
    def digest(self) -> str | None:
        return (self.manifest.get("data") or {}).get("digest")


def load_run(
    path: str | Path, *, label: str | None = None, mlflow_run_id: str | None = None, trust_edited: bool = False
) -> RunData:
    """Read a finished run directory (or a downloaded MLflow parent run laid out like one), checked first.

    The result files must have the sha256 the manifest recorded with them (:mod:`bench.runtrust`; an edited run
    raises :class:`~bench.runtrust.EditedRunError` unless ``trust_edited``, and the report then says so) and
    hold possible values (refused whatever ``trust_edited`` says).
    """
    run = open_run_dir(path)
    if not (run.results_parquet.exists() or run.results_csv.exists()):
        raise ReportError(f"{run.root}: no results.csv or results.parquet (did the run finish?)")
    try:
        manifest = run.read_manifest()
    except json.JSONDecodeError as exc:
        raise ReportError(f"{run.manifest}: not valid JSON ({exc})") from None
    edited = check_results_digests(run, manifest, trust_edited=trust_edited)  # before anything is read
    resumed_from = manifest.get("edited")  # a --resume --trust-edited run: finished cells were edited before it
    if isinstance(resumed_from, list) and resumed_from:  # at most 3 named: a manifest may hold any number
        named = [f"resumed from an edited cell: {str(n)[:300]}" for n in resumed_from[:3]]
        more = [f"and {len(resumed_from) - 3} more edited cells"] if len(resumed_from) > 3 else []
        edited = "; ".join([*([edited] if edited else []), *named, *more])
    results = run.read_results()
    source = run.results_parquet if run.results_parquet.exists() else run.results_csv
    missing = [c for c in RESULT_COLUMNS if c not in results.columns]
    if missing:
        raise ReportError(f"{source}: missing result column(s) {', '.join(missing)} (expected: {RESULT_COLUMNS})")
    check_result_values(results, source)
    results["targeted"] = results["targeted"].astype(bool)
    suite = run.read_suite()
    models = run.read_models()
    samples = _read_samples(run)
    crosscheck_csv = run.root / "crosscheck.csv"
    crosscheck = pd.read_csv(crosscheck_csv) if crosscheck_csv.exists() else None
    examples = {}
    for cell in (cell_id(m, a) for m, a in results[["model", "attack"]].drop_duplicates().itertuples(index=False)):
        found = run.read_examples(cell)
        if found is not None:
            examples[cell] = found
    return RunData(
        label=label or _default_label(run, manifest),
        root=run.root,
        results=results,
        manifest=manifest,
        suite=suite,
        models=models,
        samples=samples,
        crosscheck=crosscheck,
        examples=examples,
        mlflow_run_id=mlflow_run_id,
        edited=edited,
        certified=read_certified(run),
    )


def _read_samples(run: RunDir) -> pd.DataFrame | None:
    if not run.samples.exists():
        return None
    samples = run.read_samples()
    check_sample_rows(samples, run.samples)
    missing = [c for c in SAMPLE_COLUMNS if c not in samples.columns]
    if missing:
        raise ReportError(f"{run.samples}: missing column(s) {', '.join(missing)} (expected: {SAMPLE_COLUMNS})")
    return samples


def _default_label(run: RunDir, manifest: dict[str, Any]) -> str:
    return f"{manifest.get('suite', run.root.parent.name)}/{run.root.name}"


def unique_labels(runs: list[RunData]) -> None:
    """Make run labels distinct (two runs of one suite may share a folder name)."""
    seen: dict[str, int] = {}
    for run in runs:
        count = seen.get(run.label, 0)
        seen[run.label] = count + 1
        if count:
            run.label = f"{run.label}#{count + 1}"
