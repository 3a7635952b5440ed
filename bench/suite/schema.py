"""The suite schema: validated, frozen pydantic models (Suite and its specs) and their expansion into cells.

Fields and defaults are documented in the README ("Suite files"). Reading the
YAML is :mod:`bench.suite.load`; checks that need the registries are
:mod:`bench.suite.validate`; the gate-rule schema of ``checks:`` is
:mod:`bench.suite.rules`.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from bench import limits
from bench.rundir import CELL_SEPARATOR, cell_folder, cell_id
from bench.suite.rules import CheckRule
from bench.types import Epsilon


class SuiteError(ValueError):
    """A suite file that cannot be read or validated; the message names file and field."""


SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def _safe_name(value: str, what: str) -> str:
    if not SAFE_NAME.match(value) or ".." in value:
        raise ValueError(
            f"{what} {value!r} may contain only letters, digits, '_', '.', '-' "
            "and must start with a letter or digit (it names files and MLflow runs)"
        )
    return value


def _cell_part(spec: ModelSpec | AttackSpec, kind: str) -> None:
    """Refuse ids that would make two cells share a name: ``<model>__<attack>`` must split one way only."""
    field = "label" if spec.label is not None else "name"
    if CELL_SEPARATOR in spec.id:
        raise ValueError(
            f"{field}: {kind} id {spec.id!r} contains {CELL_SEPARATOR!r}, which separates model and attack "
            "in cell names (use '_', '-' or '.' instead)"
        )
    if kind == "model" and spec.id.endswith("_"):
        raise ValueError(f"{field}: model id {spec.id!r} ends with '_', which would run into the cell separator '__'")


class _Strict(BaseModel):
    # strict: no string coercion ("false" is not a boolean, "1_0" not an integer); floats take ints
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class DatasetSpec(_Strict):
    """Which data to attack. ``n``: the first n samples of the (shuffled) split after ``offset``; all if omitted.

    ``offset`` selects a disjoint slice of the same split (e.g. ``offset: 500, n: 500``), which is how
    two runs on different random samples of equal size are made.
    """

    name: str = "mnist5k"
    split: Literal["train", "test"] = "test"
    n: Annotated[int, Field(gt=0)] | None = None
    offset: Annotated[int, Field(ge=0)] = 0
    options: dict[str, Any] = Field(default_factory=dict)


class ModelSpec(_Strict):
    """A zoo model (``name``) with optional recipe overrides, or an external model.

    External (not trained here): ``factory: "module:attr"`` builds the
    architecture (without it, the zoo architecture ``name``), ``weights`` is a
    ``.pt``/``.pth`` state dict or an ``.npz`` of named arrays (a relative path
    is relative to the suite file that names it), ``params`` are the factory's
    keyword arguments and ``weights_layout`` the ``.npz`` linear-weight layout
    (see :mod:`model_zoo.external`).
    """

    name: str
    label: str | None = None
    recipe: dict[str, Any] = Field(default_factory=dict)
    factory: str | None = None
    weights: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    weights_layout: Literal["in_out", "out_in"] | None = None

    @property
    def external(self) -> bool:
        return self.factory is not None or self.weights is not None

    @model_validator(mode="after")
    def _external_fields(self) -> ModelSpec:
        if self.external:
            _safe_name(self.name, "external model name")
            if self.recipe:
                raise ValueError("recipe: an external model is loaded, not trained; remove 'recipe'")
        elif self.params or self.weights_layout is not None:
            raise ValueError("'params' and 'weights_layout' apply to external models (give 'factory' or 'weights')")
        if self.weights_layout is not None and not str(self.weights).lower().endswith(".npz"):
            raise ValueError("weights_layout: applies to .npz weights only")
        _cell_part(self, "model")
        return self

    @property
    def id(self) -> str:
        return self.label or self.name

    @field_validator("label")
    @classmethod
    def _label(cls, v: str | None) -> str | None:
        return None if v is None else _safe_name(v, "label")


class AttackSpec(_Strict):
    """A registered attack with keyword hyperparameters; ``epsilons`` overrides the suite's grid."""

    name: str
    label: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    epsilons: list[Epsilon] | None = None
    minimal_eps: bool = False  # also bisect each sample's minimal eps (fgsm, bim, pgd; bench/minimal_eps.py)
    target_class: Annotated[int, Field(ge=0)] | None = None  # targeted attacks: drive every sample to this class
    n: Annotated[int, Field(gt=0)] | None = None  # attack only the first n samples of the suite's data (costly attacks)

    @property
    def id(self) -> str:
        return self.label or self.name

    @field_validator("label")
    @classmethod
    def _label(cls, v: str | None) -> str | None:
        return None if v is None else _safe_name(v, "label")

    @field_validator("epsilons")
    @classmethod
    def _grid(cls, v: list[float] | None) -> list[float] | None:
        return None if v is None else _eps_grid(v)

    @model_validator(mode="after")
    def _cell_id(self) -> AttackSpec:
        _cell_part(self, "attack")
        return self


class TrackingSpec(_Strict):
    """MLflow mirroring. ``experiment`` defaults to the suite name."""

    enabled: bool = True
    experiment: str | None = None
    examples: Annotated[int, Field(ge=0, le=64)] = 8


def check_n_jobs(value: int) -> int:
    """joblib's convention: N >= 1 workers, or -1 (all cores), -2 (all but one), ...; 0 means nothing."""
    if value == 0:
        raise ValueError("n_jobs must be a number of workers >= 1, or -1 for all cores (-2 all but one, ...); got 0")
    return value


def _eps_grid(values: list[float]) -> list[float]:
    if not values:
        raise ValueError("the epsilon list is empty; give at least one epsilon, e.g. [0, 0.1]")
    if len(values) > limits.EPSILONS:
        raise ValueError(f"{len(values)} epsilons, more than the limit of {limits.EPSILONS}")
    return sorted(set(values))


def _shorthand(value: object) -> object:
    return {"name": value} if isinstance(value, str) else value


EXECUTION_FIELDS = ("backend", "scheduler")  # left out of the suite digest


class Suite(_Strict):
    """A validated suite. Fields and defaults are documented in the README ("Suite files")."""

    name: str
    description: str = ""
    seed: Annotated[int, Field(ge=-(2**63), le=2**63 - 1)] = 0  # a 64-bit signed integer: torch generators take no more
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dataset: DatasetSpec = Field(default_factory=DatasetSpec)
    models: Annotated[list[Annotated[ModelSpec, BeforeValidator(_shorthand)]], Field(min_length=1)]
    attacks: Annotated[list[Annotated[AttackSpec, BeforeValidator(_shorthand)]], Field(min_length=1)]
    epsilons: list[Epsilon]
    batch_size: Annotated[int, Field(gt=0)] = 500
    n_jobs: int = 1
    backend: Literal["loky", "threading", "dask"] = "loky"  # joblib backend of the cells (README: Parallel)
    scheduler: str | None = None  # dask.distributed scheduler address, with backend: dask
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    allow_probabilities: bool = False
    crosscheck: bool = False  # run native attacks side by side with ART (bench/crosscheck.py) into the run dir
    # zoo models: their reference weights where recorded (model_zoo/reference.py), or "retrain" by the recipe
    weights: Literal["reference", "retrain"] = "reference"
    checks: list[CheckRule] = Field(default_factory=list)  # regression-gate rules (bench/suite/rules.py)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _safe_name(v, "suite name")

    @field_validator("n_jobs")
    @classmethod
    def _n_jobs(cls, v: int) -> int:
        return check_n_jobs(v)

    @field_validator("epsilons")
    @classmethod
    def _epsilons(cls, v: list[float]) -> list[float]:
        return _eps_grid(v)

    @model_validator(mode="after")
    def _unique(self) -> Suite:
        for kind, items in (("models", self.models), ("attacks", self.attacks)):
            seen: set[str] = set()
            for item in items:
                if item.id in seen:
                    raise ValueError(f"{kind}: {item.id!r} appears twice; give one of them a distinct 'label'")
                seen.add(item.id)
        folders: dict[str, str] = {}  # after escaping, and case-insensitively (macOS and Windows file systems)
        for cell in expand(self):
            folder = cell_folder(cell.id).casefold()
            if folder in folders:
                raise ValueError(
                    f"cells {folders[folder]!r} and {cell.id!r} would share the folder cells/{cell_folder(cell.id)}/ "
                    "(names differing only in case or in characters replaced in file names); relabel one of them"
                )
            folders[folder] = cell.id
        return self

    def epsilons_for(self, attack: AttackSpec) -> list[float]:
        return list(attack.epsilons if attack.epsilons is not None else self.epsilons)

    @property
    def experiment(self) -> str:
        return self.tracking.experiment or self.name

    def resolved(self) -> dict[str, Any]:
        """The suite as plain data, includes merged and defaults filled in."""
        return self.model_dump(mode="json")

    @property
    def digest(self) -> str:
        # Where cells run does not change what they compute: a run started locally resumes on a cluster.
        resolved = {k: v for k, v in self.resolved().items() if k not in EXECUTION_FIELDS}
        # Fields added after the first release stay out while unset, so existing suites keep their
        # digests (a baseline or an interrupted run of the same suite still matches).
        for attack in resolved.get("attacks", []):
            if attack.get("n") is None:
                attack.pop("n", None)
        if resolved.get("weights") == "reference":
            resolved.pop("weights")
        blob = json.dumps(resolved, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Cell:
    """One (model, attack) pair of a suite with its epsilon grid (ascending)."""

    model: ModelSpec
    attack: AttackSpec
    epsilons: tuple[float, ...]

    @property
    def id(self) -> str:
        return cell_id(self.model.id, self.attack.id)


def expand(suite: Suite) -> list[Cell]:
    """Cells in suite order: every model against every attack."""
    return [Cell(m, a, tuple(suite.epsilons_for(a))) for m in suite.models for a in suite.attacks]
