"""What a run directory's manifest promises: its status, and the sha256 of its results.

``status`` (:data:`STATUSES`) is ``finished`` only when results, figures and
report all exist; ``results_sha256`` (written with the results) lets ``bench
sync`` refuse results changed after the run. ``bench run SUITE --resume
RUN_DIR`` completes an ``incomplete`` (or ``running``, interrupted) run without
rerunning a finished cell.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from bench.certified import CERTIFIED_FILES
from bench.rundir import RunDir, RunError

STATUSES = ("running", "incomplete", "finished")
"""``manifest.json``'s ``status``: ``running`` while cells are evaluated (or the run was killed then);
``incomplete`` once results are on disk with their digests but figures or the report are not (yet, or their
writing failed: ``error`` says why); ``finished`` only when results, figures and report all exist."""

RESULT_FILES = ("results.csv", "results.parquet", "samples.parquet")
"""The files whose sha256 the manifest records at finish (``results_sha256``); ``bench sync`` checks them."""


class RunIncomplete(RuntimeError):
    """Results are on disk but figures or the report could not be written (the environment: exit 1)."""


class RunNotFinished(RunError):
    """A run directory that is not ``finished`` where a finished one is needed (``bench sync``)."""


def resume_hint(run: RunDir) -> str:
    """The command that completes a run directory without rerunning its finished cells."""
    return f"bench run SUITE --resume {run.root} (SUITE: the suite file it was run from; no finished cell is rerun)"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def results_sha256(run: RunDir) -> dict[str, str]:
    """sha256 of each of :data:`RESULT_FILES` (all written by then) and of the certified tables, if any."""
    return {name: sha256_file(run.root / name) for name in recorded_files(run)}


def recorded_files(run: RunDir, recorded: Mapping[str, Any] | None = None) -> tuple[str, ...]:
    """The result files whose digests a manifest holds: :data:`RESULT_FILES`, and the certified tables
    (:data:`~bench.certified.CERTIFIED_FILES`) that exist or that ``recorded`` names (so a deleted or an added
    one is a mismatch too)."""
    names = set(recorded or ())
    return RESULT_FILES + tuple(n for n in CERTIFIED_FILES if n in names or (run.root / n).exists())


def combined_digest(digests: dict[str, str]) -> str:
    """One digest of the result files (16 hex digits), for tags and names."""
    blob = json.dumps(digests, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def verify_finished(run: RunDir) -> str:
    """Check a run directory is ``finished`` and its results are the ones recorded; returns their combined digest.

    Raises :class:`RunNotFinished` (not finished, with the command that completes it) or :class:`RunError`
    (results changed after the run finished, or no digests recorded).
    """
    manifest = run.read_manifest()
    status = manifest.get("status")
    if status != "finished":
        why = {
            "running": "its cells are still running, or the run was interrupted",
            "incomplete": f"its figures or report were not written ({manifest.get('error') or 'interrupted'})",
        }.get(str(status), "unknown status")
        raise RunNotFinished(
            f"{run.root}: the run has not finished (manifest status {status!r}: {why}); "
            f"if no run is still writing it, complete it with: {resume_hint(run)}"
        )
    recorded = manifest.get("results_sha256")
    if not isinstance(recorded, dict) or not set(RESULT_FILES) <= set(recorded):
        raise RunError(
            f"{run.manifest}: results_sha256: no digests of {', '.join(RESULT_FILES)} recorded "
            f"(a run written before digests were); record them with: {resume_hint(run)}"
        )
    problem = digest_mismatch(run.root, recorded, recorded_files(run, recorded), where="manifest.json at finish")
    if problem is not None:
        raise RunError(f"{problem}; refusing to use them (rerun the suite into a new run directory)")
    return combined_digest(recorded)


def digest_mismatch(folder: Path, recorded: Mapping[str, Any], names: Iterable[str], *, where: str) -> str | None:
    """The first of ``names`` (files in ``folder``) whose sha256 is not ``recorded[name]``, as one line; else None.

    The one digest comparison of ``bench sync`` (:func:`verify_finished`) and of the checks before a report,
    a gate or a resume believes a run (:mod:`bench.runtrust`); ``where`` names the record.
    """
    for name in names:
        path = folder / name
        try:
            actual = sha256_file(path)
        except OSError as exc:
            return f"{path}: unreadable ({exc.strerror or exc})"
        if actual != recorded.get(name):
            return (
                f"{path}: its sha256 {actual[:16]}... is not the {str(recorded.get(name))[:16]}... recorded in "
                f"{where}: the results were changed after the run"
            )
    return None
