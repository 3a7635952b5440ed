"""The regression gate's rule schema: floors, tolerances and allowed flips, as written in a suite's ``checks:``.

The gate (:mod:`bench.gate.compare`) applies these rules; they live with the
suite because a suite file declares them and validating a suite must not
import the gate. A rule matches checked points by model and attack (names or
shell patterns) and optionally one eps of the grid.
"""

from __future__ import annotations

import fnmatch
import math
import re
from typing import Annotated, Any, Literal, Protocol

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from bench.errors import describe_validation_error
from bench.types import Epsilon, eps_label

Unit = Annotated[float, Field(ge=0.0, le=1.0)]


class RuleError(ValueError):
    """A gate rule that cannot be parsed or applied; the message names where it came from."""


class Point(Protocol):
    """What a rule looks at: one checked number of a (model, attack) cell; ``eps`` None is the curve AUC.

    ``metric``: ``robust_accuracy`` (an attack cell) or ``certified`` (a certification cell, whose ``attack`` is
    the certifier's id).
    """

    @property
    def model(self) -> str: ...
    @property
    def attack(self) -> str: ...
    @property
    def eps(self) -> float | None: ...
    @property
    def metric(self) -> str: ...


class _Rule(BaseModel):
    # strict: "0.5" is not a number in a suite; the docstring under a field is its description (docs' reference)
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, use_attribute_docstrings=True)

    model: str = "*"
    """A model id or a shell pattern."""
    attack: str = Field("*", validation_alias=AliasChoices("attack", "certifier"))
    """An attack id or a shell pattern; with `metric: certified`, a certifier's id (also written `certifier:`)."""
    eps: Epsilon | None = None
    """One point of the grid (pixel units, a float or `"k/255"`); every eps when left out."""

    def matches(self, item: Point) -> bool:
        if not (fnmatch.fnmatchcase(item.model, self.model) and fnmatch.fnmatchcase(item.attack, self.attack)):
            return False
        return self.eps is None or (item.eps is not None and math.isclose(item.eps, self.eps, abs_tol=1e-12))


_METRIC_WORDS = {"robust_accuracy": "robust accuracy", "auc": "AUC", "certified": "certified accuracy"}


def _metric_applies(metric: str, item: Point) -> bool:
    """A rule's ``metric`` against a checked point: certified accuracy of certification cells, robust accuracy
    (at an eps) or AUC (no eps) of attack cells."""
    if metric == "certified":
        return item.metric == "certified" and item.eps is not None
    return item.metric != "certified" and (item.eps is None) == (metric == "auc")


class Floor(_Rule):
    """An absolute floor: ``metric`` of the matching cells must be at least ``min``.

    ``model``/``attack`` are names or shell patterns (default ``*``); ``eps``
    (pixel units, a float or ``"k/255"``) picks one point of the grid and
    applies to ``robust_accuracy`` only; without it the floor holds at every eps.
    """

    metric: Literal["robust_accuracy", "auc", "certified"] = "robust_accuracy"
    """What the floor applies to: robust accuracy at each eps, the curve's AUC (then no `eps`), or a certifier's
    certified accuracy at each eps (`certified`: the bracket's lower side; `certifier:` names it)."""
    min: Unit
    """The floor, in [0, 1]: the point estimate must be at least this."""

    @model_validator(mode="after")
    def _auc_has_no_eps(self) -> Floor:
        if self.metric == "auc" and self.eps is not None:
            raise ValueError("eps: an 'auc' floor covers the whole curve; drop 'eps' or use metric robust_accuracy")
        return self

    def describe(self) -> str:
        at = "" if self.eps is None else f"@{eps_label(self.eps)}"
        return f"{self.model}/{self.attack}{at} {_METRIC_WORDS[self.metric]} >= {self.min:g}"

    def applies_to(self, item: Point) -> bool:
        return _metric_applies(self.metric, item) and self.matches(item)


class MaxDrop(_Rule):
    """A tolerance: a drop larger than ``max_drop`` (absolute, in accuracy units) may count as a regression.

    ``metric: robust_accuracy`` (default) applies to robust accuracy at each
    eps (or only at ``eps``), ``metric: auc`` to the cell's curve AUC. The last
    matching rule wins. (Not ``on:``: YAML 1.1 reads that key as ``true``.)
    """

    metric: Literal["robust_accuracy", "auc", "certified"] = "robust_accuracy"
    """What the tolerance applies to: robust accuracy at each eps, the curve's AUC (then no `eps`), or a
    certifier's certified accuracy at each eps (`certified`; `certifier:` names it)."""
    max_drop: Unit
    """The tolerated drop, in accuracy units; a larger drop that is also significant is a regression."""

    @model_validator(mode="after")
    def _auc_has_no_eps(self) -> MaxDrop:
        if self.metric == "auc" and self.eps is not None:
            raise ValueError("eps: an 'auc' tolerance covers the whole curve; drop 'eps' or use metric robust_accuracy")
        return self

    def describe(self) -> str:
        at = "" if self.eps is None else f"@{eps_label(self.eps)}"
        return f"{self.model}/{self.attack}{at} {_METRIC_WORDS[self.metric]} drop <= {self.max_drop:g}"

    def applies_to(self, item: Point) -> bool:
        return _metric_applies(self.metric, item) and self.matches(item)


class AllowFlips(_Rule):
    """Per-sample changes accepted where results must otherwise be identical.

    With the same weights (equal sha256) on the same samples, a *reproducible*
    attack must give the baseline's per-sample flags exactly; the gate fails on
    any flip. This rule accepts up to ``max_flips`` changed samples (lost plus
    gained) at each matching point (every eps of the grid, or only ``eps``).
    The last matching rule wins.
    """

    max_flips: Annotated[int, Field(ge=0)]
    """Changed samples (lost plus gained) accepted per point with the same weights and a reproducible attack."""

    def describe(self) -> str:
        at = "" if self.eps is None else f"@{eps_label(self.eps)}"
        return f"{self.model}/{self.attack}{at} per-sample changes <= {self.max_flips}"

    def applies_to(self, item: Point) -> bool:
        return item.eps is not None and self.matches(item)


GateRule = Floor | MaxDrop | AllowFlips
"""Any rule of a suite's ``checks:`` list."""


def _rule_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        for key, kind in (("min", "floor"), ("max_drop", "max_drop"), ("max_flips", "max_flips")):
            if key in value:
                return kind
        return None
    return {Floor: "floor", MaxDrop: "max_drop", AllowFlips: "max_flips"}.get(type(value))


CheckRule = Annotated[
    Annotated[Floor, Tag("floor")] | Annotated[MaxDrop, Tag("max_drop")] | Annotated[AllowFlips, Tag("max_flips")],
    Discriminator(
        _rule_kind,
        custom_error_type="check_rule",
        custom_error_message=(
            "a check needs 'min' (a floor), 'max_drop' (a tolerance) or 'max_flips' (allowed per-sample changes)"
        ),
    ),
]
"""One entry of a suite's ``checks:`` list: a :class:`Floor`, a :class:`MaxDrop` or an :class:`AllowFlips`."""

RULES: TypeAdapter[list[GateRule]] = TypeAdapter(list[CheckRule])

_FLOOR = re.compile(
    r"^(?P<model>[^/@:>=\s]+)/(?P<attack>[^/@:>=\s]+)(?:@(?P<eps>[^:>=\s]+))?(?::(?P<metric>\w+))?>=(?P<min>\S+)$"
)


_NUMBER = re.compile(r"^[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?$")


def parse_floor(text: str) -> Floor:
    """A command-line floor ``MODEL/ATTACK@EPS>=MIN``, ``MODEL/ATTACK:auc>=MIN`` or
    ``MODEL/CERTIFIER@EPS:certified>=MIN`` (patterns allowed)."""
    match = _FLOOR.match(text.replace(" ", ""))
    if not match:
        raise RuleError(
            f"--floor {text!r}: expected MODEL/ATTACK@EPS>=MIN, MODEL/ATTACK:auc>=MIN or "
            "MODEL/CERTIFIER@EPS:certified>=MIN, e.g. 'lenet/fgsm@0.1>=0.6'"
        )
    raw: dict[str, Any] = {k: v for k, v in match.groupdict().items() if v is not None}
    if not _NUMBER.match(raw["min"]):  # float() would also take "1_0", "nan" and "inf"
        raise RuleError(f"--floor {text!r}: min: expected a number between 0 and 1, got {raw['min']!r}")
    raw["min"] = float(raw["min"])
    try:
        return Floor.model_validate(raw)
    except ValidationError as exc:
        raise RuleError(
            f"--floor {text!r}: {describe_validation_error(exc, top_level=None, first_only=True)}"
        ) from None


def parse_rules(raw: object, *, source: str) -> list[GateRule]:
    """A suite's ``checks:`` list (``None`` -> none); errors name ``source`` and the first bad field."""
    try:
        return RULES.validate_python(raw or [])
    except ValidationError as exc:
        raise RuleError(describe_validation_error(exc, source=source, root=("checks",), first_only=True)) from None
