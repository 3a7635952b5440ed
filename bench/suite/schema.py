"""The suite schema: validated, frozen pydantic models (Suite and its specs) and their expansion into cells.

Fields and defaults are documented in the docs ("Suites", generated from here). Reading the
YAML is :mod:`bench.suite.load`; checks that need the registries are
:mod:`bench.suite.validate`; the gate-rule schema of ``checks:`` is
:mod:`bench.suite.rules`.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

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


def _cell_part(spec: ModelSpec | _CellPart, kind: str) -> None:
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
    # use_attribute_docstrings: the docstring under a field is its description (the docs' suite reference)
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, use_attribute_docstrings=True)


class DatasetSpec(_Strict):
    """Which data to attack. ``n``: the first n samples of the (shuffled) split after ``offset``; all if omitted.

    ``offset`` selects a disjoint slice of the same split (e.g. ``offset: 500, n: 500``), which is how
    two runs on different random samples of equal size are made.
    """

    name: str = "mnist5k"
    """A registered data set (`bench ls`): mnist5k, digits, fashion-mnist, mnist, cifar10."""
    split: Literal["train", "test"] = "test"
    """Which split to attack."""
    n: Annotated[int, Field(gt=0, le=limits.FLAG_SAMPLES)] | None = None
    """The first n samples of the split (after `offset`); all of it when left out."""
    offset: Annotated[int, Field(ge=0)] = 0
    """Skip this many samples first: disjoint slices of one split (`offset: 500, n: 500`)."""
    options: dict[str, Any] = Field(default_factory=dict)
    """Data-set specific: `root` (a local folder), `download`, `verify` (CIFAR-10's MD5 check)."""


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
    """A zoo model (`bench ls`), or the id of an external model (letters, digits, `_ . -`)."""
    label: str | None = None
    """The id in results, cell folders and MLflow (default: `name`); lets one model appear twice."""
    recipe: dict[str, Any] = Field(default_factory=dict)
    """Training-recipe overrides of a zoo model (fields below); a changed recipe trains anew."""
    factory: str | None = None
    """External model: `"module:attr"` returning an `nn.Module`, imported only from a trusted module."""
    weights: str | None = None
    """External weights: `.pt`/`.pth` state_dict, `.safetensors` or `.npz`, relative to the suite file."""
    params: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments of `factory` (external models only)."""
    weights_layout: Literal["in_out", "out_in"] | None = None
    """`.npz` weights only: linear weights stored (in, out) as NumPy code keeps them, or (out, in)."""

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


class _CellPart(_Strict):
    """What attack and certifier entries share: an id (``label`` or ``name``) that names a cell beside the model's,
    and an optional eps grid of their own. Subclasses declare ``name``, ``label`` and ``epsilons`` (in their own
    order, each with its own description: the docs' suite reference is generated from them)."""

    kind: ClassVar[str] = ""

    @property
    def id(self) -> str:
        return str(getattr(self, "label", None) or getattr(self, "name", ""))

    @field_validator("label", check_fields=False)
    @classmethod
    def _label(cls, v: str | None) -> str | None:
        return None if v is None else _safe_name(v, "label")

    @field_validator("epsilons", check_fields=False)
    @classmethod
    def _grid(cls, v: list[float] | None) -> list[float] | None:
        return None if v is None else _eps_grid(v)

    @model_validator(mode="after")
    def _cell_id(self) -> _CellPart:
        _cell_part(self, self.kind)
        return self


class AttackSpec(_CellPart):
    """A registered attack with keyword hyperparameters; ``epsilons`` overrides the suite's grid."""

    kind: ClassVar[str] = "attack"

    name: str
    """A registered attack (`bench ls`), or `art:<ClassName>` for any ART evasion attack."""
    label: str | None = None
    """The id in results, cell folders and MLflow (default: `name`); lets one attack appear twice."""
    params: dict[str, Any] = Field(default_factory=dict)
    """The attack's keyword hyperparameters (see Attacks); an unknown name is an error listing the allowed ones."""
    epsilons: list[Epsilon] | None = None
    """This attack's own eps grid (default: the suite's `epsilons`)."""
    minimal_eps: bool = False
    """Also bisect each sample's minimal eps (attacks that declare a method: fgsm, bim, pgd)."""
    target_class: Annotated[int, Field(ge=0)] | None = None
    """Targeted attacks: drive every sample to this class (checked against the data set's classes)."""
    n: Annotated[int, Field(gt=0, le=limits.FLAG_SAMPLES)] | None = None
    """Attack only the first n samples of the suite's data (a costly attack such as `reliable`)."""


class CertifierSpec(_CellPart):
    """A registered certifier (``ibp``, ``crown``, ``smoothing``) run beside the attacks on every model.

    Its certified accuracy is the lower side of each model's bracket, the attacks' robust accuracy the upper.
    """

    kind: ClassVar[str] = "certifier"

    name: str
    """A registered certifier (`bench ls`): ibp, crown, smoothing."""
    label: str | None = None
    """The id in results, cell folders and MLflow (default: `name`); must differ from every attack's id."""
    params: dict[str, Any] = Field(default_factory=dict)
    """The certifier's keyword parameters (see Certified robustness), e.g. `norm: l2` or smoothing's `sigma`."""
    epsilons: list[Epsilon] | None = None
    """This certifier's own eps grid (default: the suite's `epsilons`); smoothing's are L2 radii."""
    n: Annotated[int, Field(gt=0, le=limits.FLAG_SAMPLES)] | None = None
    """Certify only the first n samples of the suite's data (smoothing costs n0 + n forward passes per sample)."""


class TrackingSpec(_Strict):
    """MLflow mirroring. ``experiment`` defaults to the suite name."""

    enabled: bool = True
    """Mirror the run into MLflow (`bench run --no-mlflow` turns it off for one run)."""
    experiment: str | None = None
    """The MLflow experiment (default: the suite name)."""
    examples: Annotated[int, Field(ge=0, le=64)] = 8
    """Adversarial examples kept per cell for the example grids."""


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
    """A validated suite. The docs' suite reference (docs/suites.md) is generated from these fields."""

    name: str
    """Letters, digits, `_ . -`; names the run folder and the MLflow experiment."""
    description: str = ""
    """Free text, shown in MLflow and reports."""
    seed: Annotated[int, Field(ge=-(2**63), le=2**63 - 1)] = 0
    """Every random choice derives from (seed, model, attack, batch, eps); a 64-bit signed integer."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """`auto` uses CUDA when present."""
    dataset: DatasetSpec = Field(default_factory=DatasetSpec)
    """The data to attack (fields below)."""
    models: Annotated[list[Annotated[ModelSpec, BeforeValidator(_shorthand)]], Field(min_length=1)]
    """Zoo names, or mappings with a label, recipe overrides or external weights (fields below)."""
    attacks: Annotated[list[Annotated[AttackSpec, BeforeValidator(_shorthand)]], Field(min_length=1)]
    """Attack names, or mappings with a label and hyperparameters (fields below)."""
    epsilons: list[Epsilon]
    """Pixel units of [0, 1]; floats or `"k/255"`; sorted, duplicates dropped."""
    batch_size: Annotated[int, Field(gt=0, le=limits.BATCH_SIZE)] = 500
    """Samples per model call; part of the random draws' identity (and of the suite digest)."""
    n_jobs: int = 1
    """Parallel cells (joblib): N workers, -1 all cores; serial where workers are predicted slower."""
    backend: Literal["loky", "threading", "dask"] = "loky"
    """The joblib backend of the cells (left out of the suite digest)."""
    scheduler: str | None = None
    """A dask.distributed scheduler address (`tcp://HOST:8786`), with `backend: dask`."""
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    """MLflow mirroring (fields below)."""
    allow_probabilities: bool = False
    """Run models whose outputs look like probabilities (refused by default: attacks need logits)."""
    crosscheck: bool = False
    """Also run every native attack side by side with its ART counterpart into the run directory."""
    weights: Literal["reference", "retrain"] = "reference"
    """Zoo models: their reference weights where recorded, or `retrain` by the recipe."""
    checks: list[CheckRule] = Field(default_factory=list)
    """Regression-gate rules for `bench check` (fields below)."""
    certify: list[Annotated[CertifierSpec, BeforeValidator(_shorthand)]] = Field(default_factory=list)
    """Certifiers run on every model beside the attacks (names, or mappings with params; fields below)."""

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
        for kind, items in (("models", self.models), ("attacks", self.attacks), ("certify", self.certify)):
            seen: set[str] = set()
            for item in items:
                if item.id in seen:
                    raise ValueError(f"{kind}: {item.id!r} appears twice; give one of them a distinct 'label'")
                seen.add(item.id)
        clash = sorted({a.id for a in self.attacks} & {c.id for c in self.certify})
        if clash:
            raise ValueError(f"certify: {clash[0]!r} is also an attack's id; give the certifier a distinct 'label'")
        folders: dict[str, str] = {}  # after escaping, and case-insensitively (macOS and Windows file systems)
        for cell in [*expand(self), *expand_certify(self)]:
            folder = cell_folder(cell.id).casefold()
            if folder in folders:
                raise ValueError(
                    f"cells {folders[folder]!r} and {cell.id!r} would share the folder cells/{cell_folder(cell.id)}/ "
                    "(names differing only in case or in characters replaced in file names); relabel one of them"
                )
            folders[folder] = cell.id
        return self

    def epsilons_for(self, attack: AttackSpec | CertifierSpec) -> list[float]:
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
        if not resolved.get("certify"):
            resolved.pop("certify", None)
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


@dataclass(frozen=True)
class CertifyCell:
    """One (model, certifier) pair of a suite with its epsilon grid (ascending)."""

    model: ModelSpec
    certifier: CertifierSpec
    epsilons: tuple[float, ...]

    @property
    def id(self) -> str:
        return cell_id(self.model.id, self.certifier.id)


def expand_certify(suite: Suite) -> list[CertifyCell]:
    """Certification cells in suite order: every model with every certifier."""
    return [CertifyCell(m, c, tuple(suite.epsilons_for(c))) for m in suite.models for c in suite.certify]
