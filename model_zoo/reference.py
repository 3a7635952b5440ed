"""Reference weights: the zoo's trained models identified by SHA-256, so numbers travel between machines.

Training rounds differently on another CPU (summation order in oneDNN/BLAS
kernels), so a model retrained elsewhere lands elsewhere. A *reference* is one
trained model per zoo entry (architecture, data set, recipe and seed, i.e. its
checkpoint key) whose weights digest (:mod:`model_zoo.weights`) is recorded in
``model_zoo/reference/index.json``:

* the small mnist5k models ship as ``model_zoo/reference/<file>.safetensors``;
* larger ones are recorded by digest only: ``bench zoo train`` makes them by the
  recipe on the reference machine, ``bench zoo export`` writes the file and
  ``bench zoo import FILE`` installs it elsewhere (into ``<cache>/reference/``)
  after checking that its digest is a recorded one.

Every file is checked against its recorded digest when loaded.
"""

from __future__ import annotations

import functools
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from model_zoo.training import cache_dir
from model_zoo.weights import WEIGHTS_SUFFIX, WeightsError, read_weights

REFERENCE_DIR = Path(__file__).parent / "reference"
INDEX = REFERENCE_DIR / "index.json"

WeightsMode = Literal["reference", "retrain"]
"""What a suite asks for (its ``weights:`` field): the reference weights where they exist, or the recipe."""
WEIGHTS_MODES: tuple[str, ...] = ("reference", "retrain")

WeightsKind = Literal["reference", "retrained", "external"]
"""What a run records of a model's weights: equal to the reference, trained here by the recipe, a user's file."""


@dataclass(frozen=True)
class ReferenceEntry:
    """One zoo entry's reference weights (a row of ``index.json``)."""

    model: str
    dataset: str
    key: str
    sha256: str
    bytes: int
    seed: int
    recipe: dict[str, Any] = field(default_factory=dict)
    file: str | None = None  # shipped with the package under REFERENCE_DIR; None: by digest only (import it)
    clean_accuracy: float | None = None
    made_on: str = ""

    @property
    def short(self) -> str:
        return self.sha256[:12]

    @property
    def store_path(self) -> Path:
        """Where ``bench zoo import`` puts this entry's file."""
        return store_dir() / f"{self.sha256}{WEIGHTS_SUFFIX}"

    def locate(self) -> Path | None:
        """The file of these weights on this machine (shipped, else imported), or ``None``."""
        if self.file is not None and (REFERENCE_DIR / self.file).is_file():
            return REFERENCE_DIR / self.file
        return self.store_path if self.store_path.is_file() else None


def store_dir() -> Path:
    """Imported reference weights: ``<cache>/reference`` (beside the checkpoint cache's ``models``)."""
    return cache_dir().parent / "reference"


@functools.cache
def _index() -> dict[str, ReferenceEntry]:
    try:
        raw = json.loads(INDEX.read_text())
    except FileNotFoundError:
        return {}
    return {row["key"]: ReferenceEntry(**row) for row in raw["weights"]}


def entries() -> list[ReferenceEntry]:
    """Every recorded reference, in index order."""
    return list(_index().values())


def reference_for(key: str) -> ReferenceEntry | None:
    """The reference of the zoo entry with checkpoint key ``key`` (see :func:`model_zoo.get_model`), if any."""
    return _index().get(key)


def by_digest(sha256: str) -> ReferenceEntry | None:
    return next((e for e in _index().values() if e.sha256 == sha256), None)


def import_weights(path: Path) -> tuple[ReferenceEntry, Path]:
    """Install a reference weights file; its digest must be one that ``index.json`` records.

    Returns the entry and where the file now lies. Raises :class:`WeightsError`
    (one line naming the file) for an unreadable file, a file that is not
    safetensors, or a digest that is no reference's.
    """
    path = Path(path)
    _, digest = read_weights(path)
    entry = by_digest(digest)
    if entry is None:
        raise WeightsError(
            f"{path}: sha256 {digest} is not the digest of any reference weights "
            "(`bench zoo list` shows the recorded ones); the file was not imported"
        )
    target = entry.store_path
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".part")
    shutil.copyfile(path, tmp)
    read_weights(tmp, expected_sha256=entry.sha256)  # the copy, checked again before it is trusted
    tmp.replace(target)
    return entry, target


VerifyState = Literal["ok", "missing", "corrupt"]


def verify(entry: ReferenceEntry) -> tuple[VerifyState, str]:
    """Whether ``entry``'s file is here and has its digest; with a one-line reason."""
    path = entry.locate()
    if path is None:
        return "missing", "not installed (train it with `bench zoo train` or `bench zoo import FILE`)"
    try:
        read_weights(path, expected_sha256=entry.sha256)
    except WeightsError as exc:
        return "corrupt", str(exc)
    return "ok", str(path)
