"""The results schema and the run directory (DESIGN.md, conventions 5 and 6).

A run directory ``runs/<suite>/<timestamp>/`` holds::

    suite.yaml          the resolved suite (includes merged, defaults filled)
    manifest.json       status, versions, git commit, data digest, seeds, device, timings, results sha256
    models.json         per model: checkpoint, recipe, clean accuracy, output checks
    results.csv         one tidy row per (model, attack, eps): RESULT_COLUMNS
    results.parquet     the same rows, typed
    samples.parquet     per-sample flags: SAMPLE_COLUMNS
    certified.csv       with ``certify:``: per (model, certifier, eps), .parquet and per-sample (bench/certified.py)
    cells/<cell>/       what each finished cell wrote (atomically): rows, samples, examples
    figures/            curve plots (PNG)

It is the source of truth: MLflow mirrors it (``bench sync``).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import yaml

from bench import limits
from bench.examples_file import read_examples_file
from bench.fsutil import atomic_path, atomic_write_text, safe_filename

CELL_SEPARATOR = "__"


def cell_id(model: str, attack: str) -> str:
    """The one name of a (model, attack) cell, ``<model>__<attack>``: every place that names a cell calls this.

    Injective because a suite's model ids hold no ``__`` and do not end in ``_``
    (:mod:`bench.suite.schema` refuses them), so the first ``__`` is the separator.
    """
    return f"{model}{CELL_SEPARATOR}{attack}"


def table_rows(path: Path) -> int:
    """Rows of a parquet table (from its footer) or a CSV file (its lines less the header), without parsing it."""
    if path.suffix == ".parquet":
        return int(pq.ParquetFile(path).metadata.num_rows)
    lines = 0
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            lines += block.count(b"\n")
    return max(lines - 1, 0)


def check_table_rows(path: Path, cap: int, *, what: str) -> None:
    """Refuse a table over ``cap`` rows before pandas reads it whole (one line naming the file and the cap)."""
    rows = table_rows(path)
    if rows > cap:
        raise limits.LimitError(f"{path}: {rows:,} {what}, over the cap of {cap:,}")


def cell_folder(cell: str) -> str:
    """The folder name of a cell under ``cells/`` (:func:`~bench.fsutil.safe_filename` of its id)."""
    return safe_filename(cell)


RESULT_COLUMNS = [
    "suite",
    "dataset",
    "split",
    "n",
    "model",
    "attack",
    "attack_name",
    "attack_params",
    "norm",
    "targeted",
    "eps",
    "clean_accuracy",
    "robust_accuracy",
    "ci_low",
    "ci_high",
    "robust_accuracy_pointwise",
    "attack_success_rate",
    "mean_linf",
    "max_linf",
    "mean_l2",
    "max_l2",
    "grad_evals",
    "seconds",
    "seed",
    "device",
]
"""Columns of ``results.csv``.

``robust_accuracy`` counts a sample as robust at eps only if it was classified
correctly under the attack at every grid eps <= eps (an example found at a
smaller eps lies in the larger ball); ``robust_accuracy_pointwise`` is the
attack at this eps alone. ``ci_low``/``ci_high``: Wilson 95% interval of
``robust_accuracy``. ``attack_success_rate``: among clean-correct samples, the
fraction fooled (untargeted) or sent to their target (targeted), cumulative like
``robust_accuracy``. Norms are of the perturbation at this eps. ``grad_evals``
and ``seconds``: what the sweep spent on this eps (an FGSM sweep spends all its
gradients on the first eps).
"""

SAMPLE_COLUMNS = [
    "model",
    "attack",
    "eps",
    "index",
    "label",
    "clean_pred",
    "adv_pred",
    "target",
    "correct",
    "correct_pointwise",
    "linf",
    "l2",
]
"""Columns of ``samples.parquet``: ``index`` is the sample's position in the data split;
``correct`` the cumulative robust flag; ``target`` is -1 for untargeted attacks."""

BRACKET_COLUMNS = ["certified_accuracy", "certified_ci_low", "certified_ci_high", "certified_by"]
OPTIONAL_RESULT_COLUMNS = ["median_min_eps", *BRACKET_COLUMNS]
"""Present only when a suite asks: the median per-sample minimal eps (``minimal_eps: true``); with ``certify:``, the
best bound certificate (``ibp``, ``crown``) at the row's model, eps and norm, its Wilson interval and certifier."""

OPTIONAL_SAMPLE_COLUMNS = ["min_eps", "broken_by"]
"""Sample columns present only when a cell asks for them: the sample's minimal eps (``inf``: never fooled);
``broken_by``: the ``reliable`` member that broke the sample (``""``: robust, ``"clean"``: misclassified unattacked)."""


def select_columns(frame: pd.DataFrame, required: list[str], optional: list[str]) -> pd.DataFrame:
    """``frame`` restricted to the required columns plus whichever optional ones it has, in that order."""
    return frame[required + [c for c in optional if c in frame.columns]]


def atomic_write_parquet(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def atomic_write_npz(path: Path, **arrays: np.ndarray) -> None:
    # np.savez appends ".npz" to names without it: write through a file object instead.
    with atomic_path(path, suffix=".npz") as tmp, tmp.open("wb") as fh:
        np.savez_compressed(fh, **arrays)


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


class RunDirError(FileNotFoundError):
    """A run directory whose files are missing or unreadable (the message names the file)."""


@dataclass(frozen=True)
class RunDir:
    """Paths of one run directory."""

    root: Path

    @property
    def suite(self) -> Path:
        return self.root / "suite.yaml"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def models(self) -> Path:
        return self.root / "models.json"

    @property
    def results_csv(self) -> Path:
        return self.root / "results.csv"

    @property
    def results_parquet(self) -> Path:
        return self.root / "results.parquet"

    @property
    def samples(self) -> Path:
        return self.root / "samples.parquet"

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    def cell(self, cell_id: str) -> Path:
        """``cells/<cell_id>/``, the id made a safe file name (ids from suites may hold ':' or '/')."""
        return self.root / "cells" / cell_folder(cell_id)

    def cell_done(self, cell_id: str) -> bool:
        return (self.cell(cell_id) / "done.json").exists()

    def read_manifest(self) -> dict[str, Any]:
        try:
            data = read_json_capped(self.manifest, what="manifest")
        except (OSError, ValueError, RecursionError) as exc:
            raise RunDirError(f"{self.manifest}: unreadable manifest ({exc})") from None
        if not isinstance(data, dict):
            raise RunDirError(f"{self.manifest}: a manifest must be a JSON object")
        return data

    def read_suite(self) -> dict[str, Any]:
        """The resolved suite this run used (``yaml.safe_load``)."""
        try:
            data = yaml.safe_load(limits.read_text_capped(self.suite, limits.RUN_JSON_BYTES, what="resolved suite"))
        except (OSError, ValueError, RecursionError, yaml.YAMLError) as exc:
            raise RunDirError(f"{self.suite}: unreadable resolved suite ({exc})") from None
        if not isinstance(data, dict) or "name" not in data:
            raise RunDirError(f"{self.suite}: not a resolved suite (a mapping with a name)")
        return data

    def read_results(self) -> pd.DataFrame:
        table = self.results_parquet if self.results_parquet.exists() else self.results_csv
        try:
            limits.check_table_size(table, what="results table")  # before pandas reads it whole
            check_table_rows(table, limits.RESULT_ROWS, what="result rows")
            if table == self.results_parquet:
                return pd.read_parquet(table)
            return pd.read_csv(table)
        except limits.LimitError:
            raise  # already one line naming the file and the limit
        except (OSError, ValueError) as exc:  # pandas' EmptyDataError and ParserError are ValueErrors
            raise RunDirError(f"{self.root}: unreadable results ({type(exc).__name__}: {exc})") from None

    def read_samples(self) -> pd.DataFrame:
        try:
            limits.check_table_size(self.samples, what="per-sample table")
            check_table_rows(self.samples, limits.SAMPLE_ROWS, what="per-sample rows")
            return pd.read_parquet(self.samples)
        except limits.LimitError:
            raise  # already one line naming the file and the limit
        except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            raise RunDirError(f"{self.samples}: unreadable per-sample table ({type(exc).__name__}: {exc})") from None

    def read_models(self) -> dict[str, Any]:
        """``models.json`` (``{}`` when absent)."""
        if not self.models.exists():
            return {}
        try:
            data = read_json_capped(self.models, what="models.json")
        except (OSError, ValueError, RecursionError) as exc:
            raise RunDirError(f"{self.models}: unreadable ({exc})") from None
        if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
            raise RunDirError(f"{self.models}: must be a JSON object of models, each an object of fields")
        return data

    def read_examples(self, cell_id: str) -> dict[str, np.ndarray] | None:
        """The cell's checked example arrays (:func:`bench.examples_file.read_examples_file`), or ``None``."""
        path = self.cell(cell_id) / "examples.npz"
        if not path.exists():
            return None
        return read_examples_file(path)


def read_json_capped(path: Path, *, what: str) -> Any:
    """A run directory's JSON file, at most :data:`limits.RUN_JSON_BYTES`, integers of bounded size."""
    text = limits.read_text_capped(path, limits.RUN_JSON_BYTES, what=what)
    return json.loads(text, parse_int=lambda s: limits.parse_int_capped(s, source=f"{path}"))


def open_run_dir(path: str | Path) -> RunDir:
    """A finished run directory, or a clear error saying what is missing."""
    run = RunDir(Path(path))
    if not run.root.is_dir():
        raise FileNotFoundError(f"{run.root}: run directory not found")
    for needed in (run.manifest, run.suite):
        if not needed.exists():
            raise FileNotFoundError(f"{run.root}: not a run directory ({needed.name} missing)")
    return run


class RunError(RuntimeError):
    """A suite that cannot run as written, or a run directory it cannot use (the message says what to change)."""


# -- a new run directory: where, claim/resume, the manifest --------------------------------------


def default_run_dir(suite_name: str, root: Path = Path("runs")) -> Path:
    """``runs/<suite>/<timestamp>``: a fresh folder per run (microseconds keep two runs apart)."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    return root / suite_name / stamp


def ensure_writable(run: RunDir) -> None:
    """Create ``run.root`` and check that a file can be written there (before any work is done)."""
    try:
        run.root.mkdir(parents=True, exist_ok=True)
        probe = run.root / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise RunError(f"output directory {run.root}: not writable ({exc.strerror})") from None


def claim_run_dir(run: RunDir, *, suite_digest: str, resume: bool, limit: int | None) -> str | None:
    """Refuse to mix two runs in one folder; on resume, check it is the same suite. Returns the old run id."""
    cells = run.root / "cells"
    if not resume:
        if cells.is_dir() and any(cells.iterdir()):
            raise RunError(
                f"{run.root} already holds results of a run; continue it with --resume {run.root} "
                "or choose another --out"
            )
        return None
    if not run.manifest.exists():
        raise RunError(f"--resume {run.root}: not a run directory (manifest.json missing)")
    try:
        old = run.read_manifest()
    except ValueError:
        raise RunError(f"--resume {run.root}: manifest.json is unreadable") from None
    if old.get("suite_digest") != suite_digest:
        raise RunError(
            f"--resume {run.root}: the run was started from a different suite "
            f"(digest {old.get('suite_digest')}, this suite {suite_digest}); resume with the same suite file"
        )
    if old.get("limit") != limit:
        raise RunError(f"--resume {run.root}: the run used --limit {old.get('limit')}, not {limit}")
    return str(old["run_uid"]) if old.get("run_uid") else None


def git_commit() -> str | None:
    """The harness' git commit (``None`` outside a checkout or without git)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, cwd=Path(__file__).parent
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def package_versions() -> dict[str, str]:
    """Versions of Python and of the packages that decide the numbers (those installed)."""
    out = {"python": platform.python_version()}
    for name in (
        "torch",
        "torchvision",
        "adversarial-robustness-toolbox",
        "mlflow",
        "numpy",
        "pandas",
        "bench-harness",
    ):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def start_manifest(
    run: RunDir,
    *,
    suite_name: str,
    suite_digest: str,
    resumed_uid: str | None,
    device: str,
    seed: int,
    data: dict[str, Any],
    limit: int | None,
    attacks: dict[str, Any],
) -> dict[str, Any]:
    """The manifest of a starting run (``status`` not included; the caller writes it).

    ``data``: the evaluated split's description (name, split, n, digest, ...);
    ``attacks``: per attack id, what the attack is (name, parameters, abilities).
    """
    return {
        "run_uid": resumed_uid or f"{suite_name}-{suite_digest}-{run.root.name}-{os.getpid()}",
        "suite": suite_name,
        "suite_digest": suite_digest,
        "started": _dt.datetime.now(_dt.UTC).isoformat(),
        "git_commit": git_commit(),
        "versions": package_versions(),
        "platform": platform.platform(),
        "device": device,
        "seed": seed,
        "data": data,
        "limit": limit,
        "argv": sys.argv,
        "attacks": attacks,
    }
