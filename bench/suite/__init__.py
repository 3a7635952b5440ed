"""Suite files: YAML -> validated, frozen objects (pydantic), and their expansion into cells.

A suite names a data set, models, attacks and epsilons. It may ``include:``
other suite files (paths relative to the including file); included mappings
are merged key by key, the including file winning, and lists are replaced
whole. Every error names the file and the field path, for example
``suites/x.yaml: attacks[1].params: attack 'fgsm' has no parameter 'steps' (allowed: ...)``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from bench.gate.compare import CheckRule
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


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
    return sorted(set(values))


def _shorthand(value: object) -> object:
    return {"name": value} if isinstance(value, str) else value


EXECUTION_FIELDS = ("backend", "scheduler")  # left out of the suite digest


class Suite(_Strict):
    """A validated suite. Fields and defaults are documented in the README ("Suite files")."""

    name: str
    description: str = ""
    seed: int = 0
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
    checks: list[CheckRule] = Field(default_factory=list)  # regression-gate rules (bench/check.py)

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
        return f"{self.model.id}__{self.attack.id}"


def expand(suite: Suite) -> list[Cell]:
    """Cells in suite order: every model against every attack."""
    return [Cell(m, a, tuple(suite.epsilons_for(a))) for m in suite.models for a in suite.attacks]


# -- reading ------------------------------------------------------------------------------


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml(path: Path) -> Any:
    """``yaml.safe_load`` a file, turning errors into :class:`SuiteError` with line and column."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SuiteError(f"{path}: suite file not found") from None
    except OSError as exc:
        raise SuiteError(f"{path}: cannot read suite file ({exc.strerror})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SuiteError(f"{path}: invalid YAML{where}: {problem}") from None


def load_raw(path: Path, _stack: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a suite file and resolve its ``include:`` chain into one mapping."""
    path = Path(path)
    real = path.resolve()
    if real in _stack:
        chain = " -> ".join(str(p) for p in (*_stack, real))
        raise SuiteError(f"{path}: include cycle ({chain})")
    data = read_yaml(path)
    if data is None:
        raise SuiteError(f"{path}: the suite file is empty")
    if not isinstance(data, dict):
        raise SuiteError(f"{path}: a suite must be a mapping of fields, got {type(data).__name__}")
    _resolve_weights(data, path.parent)
    includes = data.pop("include", None)
    if includes is None:
        return data
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        raise SuiteError(f"{path}: include: must be a file name or a list of file names")
    merged: dict[str, Any] = {}
    for inc in includes:
        inc_path = (path.parent / inc) if not Path(inc).is_absolute() else Path(inc)
        if not inc_path.exists():
            raise SuiteError(f"{path}: include: file {inc!r} not found (looked at {inc_path})")
        merged = _merge(merged, load_raw(inc_path, (*_stack, real)))
    return _merge(merged, data)


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("function-before[_shorthand(), ModelSpec]", "function-before[_shorthand(), AttackSpec]"):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _describe_errors(path: Path | str, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors(include_url=False):
        loc = _loc(tuple(p for p in err["loc"] if not str(p).startswith("function-")))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif err["type"] == "literal_error":
            msg = msg.replace("Input should be", "allowed values are")
        lines.append(f"{path}: {loc}: {msg}")
    return "\n".join(lines)


def validate(raw: dict[str, Any], *, source: Path | str = "<suite>") -> Suite:
    """Validate a suite mapping: schema, then registry names and attack parameters."""
    try:
        suite = Suite.model_validate(raw)
    except ValidationError as exc:
        raise SuiteError(_describe_errors(source, exc)) from None
    problems = list(_semantic_problems(suite))
    if problems:
        raise SuiteError("\n".join(f"{source}: {p}" for p in problems))
    return suite


def _semantic_problems(suite: Suite) -> Iterator[str]:
    from bench.attacks import ATTACKS, AttackError, make_attack
    from bench.data import DATASETS
    from bench.registry import RegistryError
    from model_zoo import MODELS

    if suite.dataset.name not in DATASETS:
        yield f"dataset.name: {DATASETS.unknown_message(suite.dataset.name)}"
    for i, model in enumerate(suite.models):
        if model.external:
            yield from (f"models[{i}].{p}" for p in _external_problems(model))
            continue
        if model.name not in MODELS:
            yield f"models[{i}].name: {MODELS.unknown_message(model.name)}"
            continue
        if model.recipe:
            try:
                MODELS.get(model.name).recipe.replace(**model.recipe)
            except (ValueError, TypeError) as exc:
                yield f"models[{i}].recipe: {exc}"
    for i, attack in enumerate(suite.attacks):
        try:
            if attack.name.startswith("art:"):
                from bench.attacks.art import art_evasion_class

                art_evasion_class(attack.name.removeprefix("art:"))
            else:
                ATTACKS.check(attack.name)
        except (RegistryError, AttackError) as exc:
            yield f"attacks[{i}].name: {exc}"
            continue
        try:
            made = make_attack(attack.name, **attack.params)
        except (AttackError, RegistryError) as exc:
            yield f"attacks[{i}].params: {exc}"
        else:
            if attack.target_class is not None and not made.targeted:
                yield (
                    f"attacks[{i}].target_class: only targeted attacks take a target class "
                    "(set params.targeted: true, or remove target_class)"
                )
            elif made.targeted and getattr(made, "target_mode", None) == "given" and attack.target_class is None:
                # "given" targets come from target_class in a suite; without it the run could only fail mid-way.
                yield (
                    f"attacks[{i}].params.target_mode: 'given' needs a target_class in the suite "
                    "(or use target_mode random or least_likely)"
                )
            field = f"attacks[{i}].epsilons" if attack.epsilons is not None else "epsilons"
            yield from (f"{field}: {p}" for p in eps_bound_problems(made.norm.value, suite.epsilons_for(attack)))
        if attack.minimal_eps:
            from bench.minimal_eps import SUPPORTED

            if attack.name not in SUPPORTED:
                allowed = ", ".join(SUPPORTED)
                yield f"attacks[{i}].minimal_eps: not available for attack {attack.name!r} (allowed: {allowed})"
        for eps in suite.epsilons_for(attack):
            if not math.isfinite(eps):
                yield f"attacks[{i}].epsilons: {eps} is not finite"


def eps_bound_problems(
    norm: str,
    epsilons: list[float],
    *,
    width: float = 1.0,
    input_shape: tuple[int, int, int] | None = None,
) -> Iterator[str]:
    """Epsilons outside what ``norm`` can mean, as messages naming the allowed range.

    ``width`` is the pixel range's width (1 for [0, 1], every registered data
    set's bounds). Without ``input_shape`` (suite validation, before the data
    is loaded) only linf (eps <= width) and l0 (a fraction, <= 1) are checked;
    with it also l2 (eps <= width * sqrt(C*H*W), the diagonal of the pixel
    cube) and patch (a side of at most min(H, W) pixels).
    """
    limits: dict[str, tuple[float, str]] = {
        "linf": (width, f"0 <= eps <= {width:g}, the width of the pixel range: every pixel may move at most that far"),
        "l0": (1.0, "0 <= eps <= 1, a fraction of the pixel positions"),
    }
    if input_shape is not None:
        c, h, w = input_shape
        diagonal = width * math.sqrt(c * h * w)
        limits["l2"] = (diagonal, f"0 <= eps <= {diagonal:.4g}, the L2 diameter of {c}x{h}x{w} inputs")
        limits["patch"] = (float(min(h, w)), f"a patch side of 0 to {min(h, w)} pixels")
    if norm not in limits:
        return
    limit, allowed = limits[norm]
    too_large = [e for e in epsilons if e > limit]
    if too_large:
        shown = ", ".join(f"{e:g}" for e in too_large)
        yield f"{shown} out of bounds for norm {norm} (allowed: {allowed})"


def _external_problems(model: ModelSpec) -> Iterator[str]:
    """Check an external model's factory, architecture and weights file without loading the weights."""
    from model_zoo import MODELS
    from model_zoo.external import ExternalModelError, resolve_factory, weights_format

    if model.factory is not None:
        try:
            resolve_factory(model.factory)
        except ExternalModelError as exc:
            yield f"factory: {exc}"
    elif model.name not in MODELS:
        yield f"name: {MODELS.unknown_message(model.name)} (or give 'factory: module:attr')"
    if model.weights is not None:
        path = Path(model.weights)
        try:
            weights_format(path)
        except ExternalModelError as exc:
            yield f"weights: {exc}"
            return
        if not path.is_file():
            yield f"weights: file {model.weights} not found"


def _resolve_weights(data: dict[str, Any], base: Path) -> None:
    """Make relative ``models[*].weights`` paths relative to the suite file that names them."""
    models = data.get("models")
    if not isinstance(models, list):
        return
    for model in models:
        if isinstance(model, dict) and isinstance(model.get("weights"), str):
            weights = Path(model["weights"]).expanduser()
            model["weights"] = str(weights if weights.is_absolute() else (base / weights).resolve())


def load_suite(path: str | Path) -> Suite:
    """Read, merge includes and validate a suite file."""
    path = Path(path)
    return validate(load_raw(path), source=path)


def dump_yaml(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
