"""Baselines for the regression gate: a run's numbers frozen into one JSON file.

A baseline holds, per (model, attack) cell, the epsilon grid, the clean
accuracy, the curve AUC and, per eps, the robust accuracy with its count, n and
Wilson 95% interval, plus the per-sample robust flags (packed bits) and their
digest, so that ``bench check`` can run a paired McNemar test when the new run
evaluated the same samples. The file records the suite name and digest and the
evaluation data's digest; :mod:`bench.gate.compare` refuses to compare runs that
measured something else. Per model it records the weights (sha256 and kind),
per cell whether the attack is reproducible (:mod:`bench.gate.exact`).

Layout (``version`` 2, written; version 1, without ``models`` and ``reproducible``, is read as
weights ``unknown`` and attacks not reproducible)::

    {"format": "bench-baseline", "version": 2, "suite": ..., "suite_digest": ...,
     "data": {"name", "split", "n", "digest"}, "indices": <base64 zlib int32>, "source": {...},
     "models": {<model>: {"sha256": <16..64 hex digits, "" if unknown>, "weights": <kind>}},
     "cells": [{"model", "attack", "attack_name", "attack_params", "norm", "targeted",
     "reproducible", "kind", "epsilons", "clean_accuracy", "auc", "auc_sd",
     "points": [{"eps", "n", "robust", "robust_accuracy", "ci_low", "ci_high",
                 "flags_digest", "flags"}]}]}

``indices``: the samples' split positions, ascending; bit ``j`` of a ``flags`` string (``numpy.packbits`` order,
base64) is sample ``indices[j]``'s robust (or certified) flag. Weights: reference, retrained, external, unknown.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import hashlib
import json
import math
import zlib
from collections import Counter
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bench import limits, stats
from bench.errors import describe_validation_error
from bench.gate.certified import certified_cells
from bench.gate.exact import ModelWeights, run_reproducible, run_weights
from bench.rundir import RunDir, atomic_write_text, open_run_dir

FORMAT = "bench-baseline"
VERSION = 2
VERSIONS = (1, 2)  # read; VERSION is written

Unit = Annotated[float, Field(ge=0.0, le=1.0)]


class BaselineError(ValueError):
    """A baseline that cannot be built, read or used; the message names the file and field."""


# -- compact encodings --------------------------------------------------------------------------


def encode_indices(indices: np.ndarray) -> str:
    """Ascending sample indices ``(N,)`` -> base64 of zlib-compressed little-endian int32."""
    return base64.b64encode(zlib.compress(np.asarray(indices, dtype="<i4").tobytes(), 9)).decode("ascii")


def decode_indices(text: str) -> np.ndarray:
    """Inverse of :func:`encode_indices`; raises ``ValueError`` on corrupt input."""
    cap = 4 * limits.FLAG_SAMPLES
    try:
        inflate = zlib.decompressobj()
        raw = inflate.decompress(base64.b64decode(text, validate=True), cap)
    except (binascii.Error, zlib.error) as exc:
        raise ValueError(f"not base64 zlib data ({exc})") from None
    if inflate.unconsumed_tail:
        raise ValueError(f"decompresses to more than {limits.FLAG_SAMPLES} sample indices (the limit)")
    if len(raw) % 4:
        raise ValueError("length is not a whole number of int32 values")
    return np.frombuffer(raw, dtype="<i4").astype(np.int64)


def encode_flags(flags: np.ndarray) -> str:
    """Boolean flags ``(N,)`` -> base64 of ``numpy.packbits`` (big-endian bit order)."""
    return base64.b64encode(np.packbits(np.asarray(flags, dtype=bool)).tobytes()).decode("ascii")


def decode_flags(text: str, n: int) -> np.ndarray:
    """Inverse of :func:`encode_flags` for ``n`` flags; raises ``ValueError`` on a wrong length."""
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"not base64 ({exc})") from None
    if len(raw) != (n + 7) // 8:
        raise ValueError(f"holds {len(raw) * 8} bits, expected {n} (rounded up to whole bytes)")
    return np.unpackbits(np.frombuffer(raw, dtype=np.uint8), count=n).astype(bool)


def flags_digest(indices: np.ndarray, flags: np.ndarray) -> str:
    """sha256 (16 hex digits) of the sample indices and their flags: equal digests, equal outcomes."""
    h = hashlib.sha256()
    h.update(np.asarray(indices, dtype="<i8").tobytes())
    h.update(np.packbits(np.asarray(flags, dtype=bool)).tobytes())
    return h.hexdigest()[:16]


# -- schema ---------------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PointRecord(_Strict):
    """One eps of a cell: ``robust`` of ``n`` samples robust (cumulative over the grid up to ``eps``)."""

    eps: Annotated[float, Field(ge=0.0)]
    n: Annotated[int, Field(gt=0, le=limits.FLAG_SAMPLES)]
    robust: Annotated[int, Field(ge=0)]
    robust_accuracy: Unit
    ci_low: Unit
    ci_high: Unit
    flags_digest: str
    flags: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> PointRecord:
        if self.robust > self.n:
            raise ValueError(f"robust ({self.robust}) exceeds n ({self.n})")
        if not math.isclose(self.robust_accuracy, self.robust / self.n, abs_tol=1e-9):
            raise ValueError(f"robust_accuracy {self.robust_accuracy} is not robust / n = {self.robust / self.n}")
        return self


class CellRecord(_Strict):
    """One (model, attack) cell: its attack definition, eps grid and per-eps points (same order)."""

    model: str
    attack: str
    attack_name: str
    attack_params: dict[str, Any]
    norm: str
    targeted: bool
    reproducible: Annotated[bool, Field(strict=True)] = False
    kind: Literal["attack", "certified"] = "attack"  # certified: attack is a certifier's id, robust its certified
    epsilons: Annotated[list[float], Field(min_length=1, max_length=limits.EPSILONS)]
    clean_accuracy: Unit
    auc: Unit
    auc_sd: Annotated[float, Field(ge=0.0)]
    points: Annotated[list[PointRecord], Field(max_length=limits.EPSILONS)]

    @property
    def key(self) -> tuple[str, str]:
        return (self.model, self.attack)

    @model_validator(mode="after")
    def _grid(self) -> CellRecord:
        if self.epsilons != sorted(set(self.epsilons)):
            raise ValueError(f"epsilons must be ascending without duplicates, got {self.epsilons}")
        if [p.eps for p in self.points] != self.epsilons:
            raise ValueError(f"points' eps {[p.eps for p in self.points]} do not match epsilons {self.epsilons}")
        return self


class DataRecord(_Strict):
    name: str
    split: str
    n: Annotated[int, Field(gt=0, le=limits.FLAG_SAMPLES)]
    digest: str


class Baseline(_Strict):
    """A run's robustness numbers, frozen for comparison (see the module docstring)."""

    format: Literal["bench-baseline"] = FORMAT
    version: Literal[1, 2] = VERSION
    suite: str
    suite_digest: str
    data: DataRecord
    indices: str | None = None
    created: str = ""
    source: dict[str, str] = Field(default_factory=dict)
    models: Annotated[dict[str, ModelWeights], Field(max_length=limits.BASELINE_CELLS)] = Field(default_factory=dict)
    cells: Annotated[list[CellRecord], Field(min_length=1, max_length=limits.BASELINE_CELLS)]

    @model_validator(mode="after")
    def _flags(self) -> Baseline:
        v2 = ["models"] * ("models" in self.model_fields_set) + [
            f"cells[{i}].reproducible" for i, c in enumerate(self.cells) if "reproducible" in c.model_fields_set
        ]
        if self.version == 1 and v2:
            raise ValueError(f"{v2[0]}: not part of baseline format version 1 (only of version 2)")
        dupes = sorted(f"{m}/{a}" for (m, a), k in Counter(c.key for c in self.cells).items() if k > 1)
        if dupes:
            raise ValueError(f"cells: {', '.join(dupes)} appear more than once")
        has_flags = [p.flags is not None for c in self.cells for p in c.points]
        if any(has_flags) and self.indices is None:
            raise ValueError("indices: missing, but points carry per-sample flags")
        if self.indices is None:
            return self
        try:
            idx = decode_indices(self.indices)
        except ValueError as exc:
            raise ValueError(f"indices: {exc}") from None
        if len(idx) != self.data.n or (len(idx) > 1 and not bool(np.all(np.diff(idx) > 0))):
            raise ValueError(f"indices: expected {self.data.n} ascending, distinct sample indices")
        for i, cell in enumerate(self.cells):
            for j, point in enumerate(cell.points):
                where = f"cells[{i}].points[{j}]"
                if point.n != self.data.n:
                    raise ValueError(f"{where}.n: {point.n} differs from data.n {self.data.n}")
                if point.flags is None:
                    continue
                try:
                    flags = decode_flags(point.flags, point.n)
                except ValueError as exc:
                    raise ValueError(f"{where}.flags: {exc}") from None
                if int(flags.sum()) != point.robust:
                    raise ValueError(f"{where}.flags: {int(flags.sum())} robust flags, but robust is {point.robust}")
                if flags_digest(idx, flags) != point.flags_digest:
                    raise ValueError(f"{where}.flags_digest: does not match the flags (file edited or corrupt)")
        return self

    def cell(self, model: str, attack: str) -> CellRecord | None:
        return next((c for c in self.cells if c.key == (model, attack)), None)

    def sample_indices(self) -> np.ndarray | None:
        return None if self.indices is None else decode_indices(self.indices)

    def flag_matrix(self, cell: CellRecord) -> np.ndarray | None:
        """Robust flags ``(E, N)`` of ``cell`` (rows follow ``cell.epsilons``), or ``None`` without flags."""
        if any(p.flags is None for p in cell.points):
            return None
        return np.stack([decode_flags(p.flags, p.n) for p in cell.points if p.flags is not None])

    def without_flags(self) -> Baseline:
        cells = [
            c.model_copy(update={"points": [p.model_copy(update={"flags": None}) for p in c.points]})
            for c in self.cells
        ]
        return self.model_copy(update={"cells": cells, "indices": None})

    def to_json(self) -> str:
        """The file's text, always as the current :data:`VERSION` (a version-1 baseline is upgraded)."""
        return json.dumps({**self.model_dump(mode="json"), "version": VERSION}, indent=1) + "\n"


# -- building and reading -------------------------------------------------------------------------


def sample_areas(flags: np.ndarray, epsilons: list[float]) -> np.ndarray:
    """Per-sample area under the robust-flag curve ``(N,)``, normalized like :func:`stats.curve_auc`.

    ``flags`` is ``(E, N)`` over ascending ``epsilons``; the mean of the areas
    is the curve AUC of the cell, which makes the AUC testable sample by sample.
    """
    values = flags.astype(float)
    if len(epsilons) == 1 or epsilons[-1] == epsilons[0]:
        return values[0]
    return np.trapezoid(values, np.asarray(epsilons, dtype=float), axis=0) / (epsilons[-1] - epsilons[0])


def baseline_from_run(run_dir: str | Path | RunDir, *, with_flags: bool = True) -> Baseline:
    """Freeze a finished run directory into a :class:`Baseline` (flags from ``samples.parquet``)."""
    run = run_dir if isinstance(run_dir, RunDir) else open_run_dir(run_dir)
    manifest = run.read_manifest()
    if manifest.get("status") != "finished":
        raise BaselineError(f"{run.manifest}: the run has not finished (status {manifest.get('status')!r})")
    for needed in (run.results_parquet, run.samples):
        if not needed.exists():
            raise BaselineError(f"{run.root}: {needed.name} missing; is this a finished run directory?")
    results = run.read_results()
    samples = run.read_samples()
    data = manifest["data"]
    indices = np.sort(samples["index"].unique()).astype(np.int64)
    if len(indices) != int(data["n"]):
        raise BaselineError(f"{run.samples}: {len(indices)} distinct sample indices, manifest data.n is {data['n']}")
    by_point = {key: group for key, group in samples.groupby(["model", "attack", "eps"], sort=False)}
    cells = []
    for (model, attack), rows in results.groupby(["model", "attack"], sort=False):
        rows = rows.sort_values("eps")
        epsilons = [float(e) for e in rows["eps"]]
        flags = np.zeros((len(epsilons), len(indices)), dtype=bool)
        for i, eps in enumerate(epsilons):
            group = by_point.get((model, attack, eps))
            if group is None or len(group) != len(indices):
                raise BaselineError(
                    f"{run.samples}: {model}/{attack} at eps {eps} has "
                    f"{0 if group is None else len(group)} samples, expected {len(indices)}"
                )
            group = group.sort_values("index")
            if not np.array_equal(group["index"].to_numpy(), indices):
                raise BaselineError(f"{run.samples}: {model}/{attack} at eps {eps} covers other samples than the run")
            flags[i] = group["correct"].to_numpy(dtype=bool)
        reproducible = run_reproducible(run, manifest, str(attack))
        cells.append(_cell_record(str(model), str(attack), rows, epsilons, flags, indices, with_flags, reproducible))
    cells += certified_cells(run, indices, with_flags, _cell_record)
    return Baseline(
        suite=str(manifest["suite"]),
        suite_digest=str(manifest.get("suite_digest", "")),
        data=DataRecord(name=data["name"], split=data["split"], n=int(data["n"]), digest=data["digest"]),
        indices=encode_indices(indices) if with_flags else None,
        created=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        source={
            "run_uid": str(manifest.get("run_uid", "")),
            "run_dir": str(run.root),
            "git_commit": str(manifest.get("git_commit") or ""),
            "numerics": str(manifest.get("numerics") or ""),  # torch, device, CPU kernels: bench/engine/numerics.py
        },
        models=run_weights(run, sorted({c.model for c in cells})),
        cells=cells,
    )


def _cell_record(
    model: str,
    attack: str,
    rows: pd.DataFrame,
    epsilons: list[float],
    flags: np.ndarray,
    indices: np.ndarray,
    with_flags: bool,
    reproducible: bool,
) -> CellRecord:
    first = rows.iloc[0]
    n = len(indices)
    points = []
    for i, eps in enumerate(epsilons):
        robust = int(flags[i].sum())
        low, high = stats.wilson_interval(robust, n)
        points.append(
            PointRecord(
                eps=eps,
                n=n,
                robust=robust,
                robust_accuracy=robust / n,
                ci_low=low,
                ci_high=high,
                flags_digest=flags_digest(indices, flags[i]),
                flags=encode_flags(flags[i]) if with_flags else None,
            )
        )
    areas = sample_areas(flags, epsilons)
    return CellRecord(
        model=model,
        attack=attack,
        attack_name=str(first["attack_name"]),
        attack_params=json.loads(first["attack_params"]),
        norm=str(first["norm"]),
        targeted=bool(first["targeted"]),
        reproducible=reproducible,
        epsilons=epsilons,
        clean_accuracy=float(first["clean_accuracy"]),
        auc=float(np.clip(areas.mean(), 0.0, 1.0)),
        auc_sd=float(areas.std(ddof=1)) if n > 1 else 0.0,
        points=points,
    )


def parse_baseline(text: str, *, source: str) -> Baseline:
    """Validate baseline JSON text; errors name ``source`` and the field path."""
    try:
        raw = json.loads(text, parse_int=lambda s: limits.parse_int_capped(s, source=source))
    except json.JSONDecodeError as exc:
        raise BaselineError(f"{source}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except limits.LimitError as exc:
        raise BaselineError(str(exc)) from None
    except RecursionError:
        raise BaselineError(f"{source}: JSON nested too deeply") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise BaselineError(
            f'{source}: format: not a bench baseline (expected "format": "{FORMAT}"; '
            "make one with `bench baseline RUN_DIR -o FILE`)"
        )
    if type(version := raw.get("version")) is not int or version not in VERSIONS:  # not True (== 1) either
        raise BaselineError(f"{source}: version: baseline format version {version!r} is not supported (allowed: 1, 2)")
    try:
        return Baseline.model_validate(raw)
    except ValidationError as exc:
        # Cross-field checks (no location) name their field in the message.
        raise BaselineError(describe_validation_error(exc, source=source, top_level=None)) from None


def read_baseline(path: str | Path) -> Baseline:
    """Read and validate a baseline file."""
    path = Path(path)
    try:
        text = limits.read_text_capped(path, limits.BASELINE_FILE_BYTES, what="baseline file")
    except FileNotFoundError:
        raise BaselineError(f"{path}: baseline file not found") from None
    except limits.LimitError as exc:
        raise BaselineError(str(exc)) from None
    except OSError as exc:
        raise BaselineError(f"{path}: cannot read baseline file ({exc})") from None
    return parse_baseline(text, source=str(path))


def write_baseline(baseline: Baseline, path: str | Path) -> None:
    atomic_write_text(Path(path), baseline.to_json())
