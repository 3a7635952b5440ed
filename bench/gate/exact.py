"""Same weights, same numbers: the weights' identity and the exact per-sample comparison it allows.

Zoo models have reference weights identified by sha256 (``models.json``:
``weights_sha256`` and ``weights``). When a model's weights equal the
baseline's and the run evaluated the same samples, an attack the manifest
declares ``reproducible`` (per-sample results identical across runs, thread
counts and CPUs given equal weights, inputs and seed) must give the baseline's
per-sample robust flags exactly: any sample that flipped (robust before and
not now, or the reverse) is a change the gate reports by sample id, unless an
:class:`~bench.suite.rules.AllowFlips` rule accepts it. With other or unknown
weights the difference includes training variance, and the gate's statistical
tests (:mod:`bench.gate.compare`) decide as before.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bench.errors import describe_validation_error
from bench.rundir import RunDir, RunError
from bench.suite.rules import AllowFlips, Point

WeightsKind = Literal["reference", "retrained", "external", "unknown"]
"""Where a model's weights came from (``unknown``: the run did not record it)."""

SHOWN_IDS = 20
"""Sample ids listed per direction of a flip before "and N more"."""

DIGEST_SHOWN = 12
"""Hex digits of a weights digest shown in notes and tables."""


class ModelWeights(BaseModel):
    """A model's weights: their sha256 (16 to 64 lowercase hex digits, ``""`` when unknown) and kind."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sha256: Annotated[str, Field(pattern=r"^(?:[0-9a-f]{16,64})?$")]
    weights: WeightsKind

    @model_validator(mode="after")
    def _known(self) -> ModelWeights:
        if not self.sha256 and self.weights != "unknown":
            raise ValueError(f"sha256: empty, but weights are {self.weights!r} (only 'unknown' weights have no digest)")
        return self

    def describe(self) -> str:
        """``reference 0123456789ab``, or ``unknown``."""
        return f"{self.weights} {self.sha256[:DIGEST_SHOWN]}" if self.sha256 else self.weights


UNKNOWN = ModelWeights(sha256="", weights="unknown")


def run_weights(run: RunDir, models: Iterable[str]) -> dict[str, ModelWeights]:
    """Each model's weights from the run's ``models.json``; unknown where it does not record them."""
    recorded = run.read_models()
    out = {}
    for model in models:
        entry: dict[str, Any] = recorded.get(model, {})
        if "weights_sha256" not in entry and "weights" not in entry:
            out[model] = UNKNOWN
            continue
        if entry.get("weights_sha256") is None:  # an external model with its factory's own weights: no file
            out[model] = UNKNOWN
            continue
        try:
            out[model] = ModelWeights.model_validate(
                {"sha256": entry.get("weights_sha256"), "weights": entry.get("weights", "unknown")}
            )
        except ValidationError as exc:
            # "sha256: ..." (its field or the cross-field check) or "weights: ...", as models.json names them
            message = describe_validation_error(exc, top_level=None, first_only=True)
            field, _, message = message.partition(": ")
            raise RunError(
                f"{run.models}: {model}.{'weights_sha256' if field == 'sha256' else field}: {message}"
            ) from None
    return out


def run_reproducible(run: RunDir, manifest: Mapping[str, Any], attack: str) -> bool:
    """The manifest's ``attacks.<attack>.reproducible`` (``False`` where a run did not record it)."""
    attacks = manifest.get("attacks")
    record = attacks.get(attack) if isinstance(attacks, dict) else None
    value = record.get("reproducible", False) if isinstance(record, dict) else False
    if not isinstance(value, bool):
        raise RunError(f"{run.manifest}: attacks.{attack}.reproducible: expected a boolean, got {value!r}")
    return value


# -- the weights of the run against the baseline's ---------------------------------------------------


@dataclass(frozen=True)
class WeightsCheck:
    """One model's weights in the run and the baseline; ``status`` is ``same``, ``differ`` or ``unknown``."""

    model: str
    status: Literal["same", "differ", "unknown"]
    current: ModelWeights
    baseline: ModelWeights | None

    @property
    def same(self) -> bool:
        return self.status == "same"

    @property
    def summary(self) -> str:
        """``same (reference 0123456789ab)``, ``differ (run retrained ..., baseline reference ...)``, ..."""
        if self.status == "same":
            return f"same ({self.current.describe()})"
        if self.baseline is None:
            return f"{self.current.describe()} (no baseline)"
        return f"{self.status} (run {self.current.describe()}, baseline {self.baseline.describe()})"

    @property
    def note(self) -> str:
        """The report's note on this model's weights: the same, differing (training variance) or unknown."""
        if self.status == "same":
            return f"{self.model}: same weights ({self.current.weights}, sha256 {self.current.sha256[:DIGEST_SHOWN]})"
        if self.status == "differ":
            return (
                f"{self.model}: weights differ: the difference includes training variance "
                f"(run {self.current.describe()}, baseline {self.baseline.describe() if self.baseline else ''})"
            )
        missing = [
            name
            for name, weights in (("run", self.current), ("baseline", self.baseline))
            if weights is None or not weights.sha256
        ]
        which = " and ".join(missing)
        return f"{self.model}: weights unknown in the {which}: compared statistically (may include training variance)"


def compare_weights(
    models: Sequence[str], current: Mapping[str, ModelWeights], baseline: Mapping[str, ModelWeights] | None
) -> list[WeightsCheck]:
    """Per model of the run: ``same`` when both sha256 are known and equal, ``differ`` when known and not."""
    checks = []
    for model in models:
        now = current.get(model, UNKNOWN)
        before = None if baseline is None else baseline.get(model, UNKNOWN)
        if before is None or not now.sha256 or not before.sha256:
            status: Literal["same", "differ", "unknown"] = "unknown"
        else:
            status = "same" if now.sha256 == before.sha256 else "differ"
        checks.append(WeightsCheck(model, status, now, before))
    return checks


def same_numerics(current: Mapping[str, str], baseline: Mapping[str, str]) -> bool:
    """Both runs on the same torch, device and CPU kernels (a baseline's ``source.numerics``, written from
    the manifest's ``numerics``: :mod:`bench.engine.numerics`); unknown on either side is not the same."""
    return bool(current.get("numerics")) and current.get("numerics") == baseline.get("numerics")


def numerics_note(current: Mapping[str, str], baseline: Mapping[str, str]) -> str:
    """Why equal weights are still compared statistically: the kernels, and so the rounding, differ."""
    return (
        f"same weights, but other numerics (baseline: {baseline.get('numerics') or 'not recorded'}; "
        f"run: {current.get('numerics') or 'not recorded'}): a gradient component near zero can change sign "
        "with another summation order, so per-sample results are compared statistically"
    )


# -- per-sample flips --------------------------------------------------------------------------------


def _ids(ids: Sequence[int]) -> str:
    shown = ", ".join(str(i) for i in ids[:SHOWN_IDS])
    more = len(ids) - SHOWN_IDS
    return shown + (f" and {more} more" if more > 0 else "")


@dataclass(frozen=True)
class Flips:
    """Samples (data-set indices) whose robust flag changed at one point: ``lost`` were robust, ``gained`` were not."""

    lost: tuple[int, ...]
    gained: tuple[int, ...]

    @property
    def count(self) -> int:
        return len(self.lost) + len(self.gained)

    def describe(self) -> str:
        """``lost 2 (samples 12, 57); gained 1 (sample 8)`` (at most :data:`SHOWN_IDS` ids each)."""
        parts = []
        for what, ids in (("lost", self.lost), ("gained", self.gained)):
            if ids:
                parts.append(f"{what} {len(ids)} (sample{'s' if len(ids) > 1 else ''} {_ids(ids)})")
        return "; ".join(parts) or "no per-sample change"


def point_flips(before: np.ndarray, now: np.ndarray, indices: np.ndarray) -> Flips:
    """The flips between two flag rows ``(N,)`` over the same ascending sample ``indices``."""
    lost = indices[before & ~now]
    gained = indices[~before & now]
    return Flips(tuple(int(i) for i in lost), tuple(int(i) for i in gained))


def allowed_flips(rules: Iterable[object], item: Point) -> AllowFlips | None:
    """The last :class:`AllowFlips` rule that applies to ``item``, or ``None``."""
    found = None
    for rule in rules:
        if isinstance(rule, AllowFlips) and rule.applies_to(item):
            found = rule
    return found


def flip_verdict(status: str, note: str, flips: Flips | None, rule: AllowFlips | None) -> tuple[str, str]:
    """An item's status and note once its per-sample ``flips`` (if compared exactly) are taken into account.

    Flips not accepted by ``rule`` turn ``ok`` or ``improved`` into ``changed``;
    a failing status stays, its note listing the flips too.
    """
    if flips is None or not flips.count:
        return status, note
    limit = None if rule is None else rule.max_flips
    accepted = limit is not None and flips.count <= limit
    why = f"allowed (max_flips {limit})" if accepted else "with the same weights (reproducible attack)"
    text = f"{flips.count} per-sample change{'s' if flips.count > 1 else ''} {why}: {flips.describe()}"
    if status in ("ok", "improved"):
        return (status if accepted else "changed"), text
    return status, f"{note}; {text}" if note else text
