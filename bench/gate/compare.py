"""The regression gate: compare a run with a baseline under rules, aware of sampling noise.

Checked items are the points (model, attack, eps) of every cell of the run and
each cell's curve AUC. An item is

* **below floor** when a floor rule (``min``) is not met by its point estimate;
* **regressed** when its drop from the baseline exceeds the tolerance
  (``max_drop``) *and* the drop is significant at ``alpha`` after a Holm
  correction over all compared items (so the whole gate, not each of its
  dozens of items, cries wolf at most ``alpha`` of the time on pure noise);
* **improved** when it rose by more than the tolerance, significantly;
* **new** when the baseline has no such cell; otherwise **ok**.

Tests (one-sided, H0: no drop):

* same samples in both runs (equal data digest and per-sample flags on both
  sides): McNemar's exact test on the discordant pairs, mid-p by default
  (b = robust before and not now, c = the reverse; b ~ Binomial(b + c, 1/2));
* otherwise: the pooled two-proportion z-test, with Wilson 95% intervals shown;
* AUC: per-sample areas under the robust-flag curve (their mean is the AUC),
  compared with a paired t-test on the same samples, else Welch's t-test from
  the stored means and standard deviations.

Rules are pydantic models, written in a suite's ``checks:`` list or on the command line.
"""

from __future__ import annotations

import fnmatch
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter, model_validator

from bench import stats
from bench.gate.baseline import Baseline, BaselineError, CellRecord, sample_areas
from bench.types import Epsilon, eps_label

DEFAULT_ALPHA = 0.05
DEFAULT_MAX_DROP = 0.02
DEFAULT_MAX_AUC_DROP = 0.02


class CheckConfigError(ValueError):
    """Rules or settings that cannot be applied (a rule that matches nothing, a bad option)."""


class BaselineMismatch(BaselineError):
    """A baseline that measured something else than the run (other suite, data or eps grid)."""


# -- rules ----------------------------------------------------------------------------------------


Unit = Annotated[float, Field(ge=0.0, le=1.0)]


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = "*"
    attack: str = "*"
    eps: Epsilon | None = None

    def matches(self, item: Item) -> bool:
        if not (fnmatch.fnmatchcase(item.model, self.model) and fnmatch.fnmatchcase(item.attack, self.attack)):
            return False
        return self.eps is None or (item.eps is not None and math.isclose(item.eps, self.eps, abs_tol=1e-12))


class Floor(_Rule):
    """An absolute floor: ``metric`` of the matching cells must be at least ``min``.

    ``model``/``attack`` are names or shell patterns (default ``*``); ``eps``
    (pixel units, a float or ``"k/255"``) picks one point of the grid and
    applies to ``robust_accuracy`` only; without it the floor holds at every eps.
    """

    metric: Literal["robust_accuracy", "auc"] = "robust_accuracy"
    min: Unit

    @model_validator(mode="after")
    def _auc_has_no_eps(self) -> Floor:
        if self.metric == "auc" and self.eps is not None:
            raise ValueError("eps: an 'auc' floor covers the whole curve; drop 'eps' or use metric robust_accuracy")
        return self

    def describe(self) -> str:
        at = "" if self.eps is None else f"@{eps_label(self.eps)}"
        what = "AUC" if self.metric == "auc" else "robust accuracy"
        return f"{self.model}/{self.attack}{at} {what} >= {self.min:g}"

    def applies_to(self, item: Item) -> bool:
        return (item.eps is None) == (self.metric == "auc") and self.matches(item)


class MaxDrop(_Rule):
    """A tolerance: a drop larger than ``max_drop`` (absolute, in accuracy units) may count as a regression.

    ``metric: robust_accuracy`` (default) applies to robust accuracy at each
    eps (or only at ``eps``), ``metric: auc`` to the cell's curve AUC. The last
    matching rule wins. (Not ``on:``: YAML 1.1 reads that key as ``true``.)
    """

    metric: Literal["robust_accuracy", "auc"] = "robust_accuracy"
    max_drop: Unit

    @model_validator(mode="after")
    def _auc_has_no_eps(self) -> MaxDrop:
        if self.metric == "auc" and self.eps is not None:
            raise ValueError("eps: an 'auc' tolerance covers the whole curve; drop 'eps' or use metric robust_accuracy")
        return self

    def describe(self) -> str:
        at = "" if self.eps is None else f"@{eps_label(self.eps)}"
        what = "AUC" if self.metric == "auc" else "robust accuracy"
        return f"{self.model}/{self.attack}{at} {what} drop <= {self.max_drop:g}"

    def applies_to(self, item: Item) -> bool:
        return (item.eps is None) == (self.metric == "auc") and self.matches(item)


def _rule_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        return "floor" if "min" in value else "max_drop" if "max_drop" in value else None
    return {Floor: "floor", MaxDrop: "max_drop"}.get(type(value))


CheckRule = Annotated[
    Annotated[Floor, Tag("floor")] | Annotated[MaxDrop, Tag("max_drop")],
    Discriminator(
        _rule_kind,
        custom_error_type="check_rule",
        custom_error_message="a check needs 'min' (a floor) or 'max_drop' (a tolerance)",
    ),
]
"""One entry of a suite's ``checks:`` list: a :class:`Floor` or a :class:`MaxDrop`."""

RULES: TypeAdapter[list[Floor | MaxDrop]] = TypeAdapter(list[CheckRule])

_FLOOR = re.compile(
    r"^(?P<model>[^/@:>=\s]+)/(?P<attack>[^/@:>=\s]+)(?:@(?P<eps>[^:>=\s]+))?(?::(?P<metric>\w+))?>=(?P<min>\S+)$"
)


def parse_floor(text: str) -> Floor:
    """A command-line floor ``MODEL/ATTACK@EPS>=MIN`` or ``MODEL/ATTACK:auc>=MIN`` (patterns allowed)."""
    match = _FLOOR.match(text.replace(" ", ""))
    if not match:
        raise CheckConfigError(
            f"--floor {text!r}: expected MODEL/ATTACK@EPS>=MIN or MODEL/ATTACK:auc>=MIN, e.g. 'lenet/fgsm@0.1>=0.6'"
        )
    raw: dict[str, Any] = {k: v for k, v in match.groupdict().items() if v is not None}
    try:
        return Floor.model_validate(raw)
    except ValueError as exc:
        raise CheckConfigError(f"--floor {text!r}: {_first_error(exc)}") from None


def _first_error(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors(include_url=False)[0]
        loc = ".".join(str(p) for p in first["loc"])
        return f"{loc + ': ' if loc else ''}{first['msg'].removeprefix('Value error, ')}"
    return str(exc)


# -- comparison -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """How the gate decides.

    Args:
        alpha: significance level of the one-sided tests, for the whole gate under ``holm``.
        max_drop: tolerance for robust accuracy at each eps where no rule sets one (accuracy units).
        max_auc_drop: tolerance for the curve AUC where no rule sets one.
        correction: ``holm`` (family-wise error over all compared items) or ``none``.
        mid_p: McNemar mid-p (less conservative than the exact test, close to nominal size) or exact.
        allow_other_data: compare runs on different samples (unpaired tests) instead of refusing.
    """

    alpha: float = DEFAULT_ALPHA
    max_drop: float = DEFAULT_MAX_DROP
    max_auc_drop: float = DEFAULT_MAX_AUC_DROP
    correction: Literal["holm", "none"] = "holm"
    mid_p: bool = True
    allow_other_data: bool = False

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 1.0:
            raise CheckConfigError(f"alpha must be in (0, 1), got {self.alpha}")
        for name in ("max_drop", "max_auc_drop"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise CheckConfigError(f"{name} must be in [0, 1], got {getattr(self, name)}")


@dataclass
class Item:
    """One checked number: robust accuracy at ``eps``, or the curve AUC when ``eps`` is None."""

    model: str
    attack: str
    eps: float | None
    current: float
    n_current: int
    baseline: float | None = None
    n_baseline: int | None = None
    current_ci: tuple[float, float] | None = None
    baseline_ci: tuple[float, float] | None = None
    test: str = ""
    detail: str = ""
    tolerance: float | None = None
    p_drop: float | None = None
    p_rise: float | None = None
    p_drop_adjusted: float | None = None
    p_rise_adjusted: float | None = None
    floors: list[tuple[str, bool]] = field(default_factory=list)
    status: str = "ok"
    note: str = ""

    @property
    def name(self) -> str:
        return "auc" if self.eps is None else f"eps={eps_label(self.eps)}"

    @property
    def change(self) -> float | None:
        return None if self.baseline is None else self.current - self.baseline

    @property
    def failed(self) -> bool:
        return self.status in ("regressed", "below floor")


@dataclass
class CheckReport:
    """Everything ``bench check`` found; ``exit_code`` is 0 (pass) or 1 (regression or floor)."""

    suite: str
    items: list[Item]
    settings: Settings
    baseline_source: str | None
    paired: bool
    notes: list[str] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(item.status == status for item in self.items)

    @property
    def passed(self) -> bool:
        return not any(item.failed for item in self.items)

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1

    @property
    def verdict(self) -> str:
        if self.passed:
            return "PASS"
        return f"FAIL: {self.count('regressed')} regressed, {self.count('below floor')} below floor"


def compatibility(
    current: Baseline, baseline: Baseline, *, source: str, allow_other_data: bool
) -> tuple[bool, list[str]]:
    """Refuse a baseline that measured something else; returns (paired, notes).

    Raises :class:`BaselineMismatch` listing every difference: suite name, data
    set and split, data digest (unless ``allow_other_data``), a cell's attack
    definition or eps grid, or cells the run lacks.
    """
    problems: list[str] = []
    notes: list[str] = []
    if baseline.suite != current.suite:
        problems.append(f"the baseline is for suite {baseline.suite!r}, the run is suite {current.suite!r}")
    bd, cd = baseline.data, current.data
    if (bd.name, bd.split) != (cd.name, cd.split):
        problems.append(f"the baseline evaluated {bd.name}/{bd.split}, the run {cd.name}/{cd.split}")
    elif bd.digest != cd.digest:
        what = (
            f"the run evaluated other samples (data digest {cd.digest}, n={cd.n}) "
            f"than the baseline (data digest {bd.digest}, n={bd.n})"
        )
        if allow_other_data:
            notes.append(what + "; compared with unpaired tests (--allow-other-data)")
        else:
            problems.append(what + "; pass --allow-other-data to compare them with unpaired tests")
    for cell in baseline.cells:
        now = current.cell(cell.model, cell.attack)
        name = f"{cell.model}/{cell.attack}"
        if now is None:
            problems.append(
                f"cell {name} is in the baseline but not in the run (make a new baseline if it was removed)"
            )
            continue
        for attr in ("attack_name", "attack_params", "norm", "targeted"):
            if getattr(now, attr) != getattr(cell, attr):
                problems.append(
                    f"cell {name}: {attr} differs: baseline {getattr(cell, attr)!r}, run {getattr(now, attr)!r}"
                )
        if len(now.epsilons) != len(cell.epsilons) or not np.allclose(now.epsilons, cell.epsilons, rtol=0, atol=1e-12):
            problems.append(
                f"cell {name}: eps grid differs: baseline [{_grid(cell.epsilons)}], run [{_grid(now.epsilons)}]"
            )
    if problems:
        raise BaselineMismatch(
            f"{source}: baseline does not match the run:\n" + "\n".join(f"  - {p}" for p in problems)
        )
    if baseline.suite_digest != current.suite_digest:
        notes.append(
            f"suite digest differs (baseline {baseline.suite_digest}, run {current.suite_digest}): "
            "models or settings changed; cells are compared by their (model, attack) labels"
        )
    base_idx, cur_idx = baseline.sample_indices(), current.sample_indices()
    paired = (
        bd.digest == cd.digest and base_idx is not None and cur_idx is not None and np.array_equal(base_idx, cur_idx)
    )
    if bd.digest == cd.digest and not paired:
        notes.append("the baseline has no per-sample flags: unpaired tests (less power than McNemar)")
    return paired, notes


def _grid(values: list[float]) -> str:
    return ", ".join(eps_label(v) for v in values)


def mcnemar_p(losses: int, gains: int, *, mid_p: bool = True) -> float:
    """One-sided McNemar p-value for "more samples lost than gained" (mid-p by default; see bench.stats)."""
    return stats.mcnemar_p(losses, gains, mid_p=mid_p)


def two_proportion_p(x_before: int, n_before: int, x_now: int, n_now: int) -> float:
    """One-sided pooled two-proportion z-test p-value for "the proportion dropped"."""
    pooled = (x_before + x_now) / (n_before + n_now)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_before + 1 / n_now))
    if se == 0:
        return 1.0
    z = (x_before / n_before - x_now / n_now) / se
    return 0.5 * math.erfc(z / math.sqrt(2))  # the normal survival function


def holm(pvalues: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (family-wise error control), in the input order."""
    m = len(pvalues)
    order = np.argsort(pvalues, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted.tolist()


def _nan_to_one(p: float) -> float:
    return 1.0 if not math.isfinite(p) else float(p)


def _point_items(
    cur: CellRecord,
    cur_flags: np.ndarray,
    base: CellRecord | None,
    base_flags: np.ndarray | None,
    paired: bool,
    mid_p: bool,
) -> list[Item]:
    items = []
    for i, point in enumerate(cur.points):
        item = Item(
            cur.model, cur.attack, point.eps, point.robust_accuracy, point.n, current_ci=(point.ci_low, point.ci_high)
        )
        if base is not None:
            old = base.points[i]
            item.baseline, item.n_baseline, item.baseline_ci = old.robust_accuracy, old.n, (old.ci_low, old.ci_high)
            if paired and base_flags is not None:
                losses = int((base_flags[i] & ~cur_flags[i]).sum())
                gains = int((~base_flags[i] & cur_flags[i]).sum())
                item.test = "McNemar mid-p" if mid_p else "McNemar exact"
                item.detail = f"lost {losses}, gained {gains}"
                item.p_drop = mcnemar_p(losses, gains, mid_p=mid_p)
                item.p_rise = mcnemar_p(gains, losses, mid_p=mid_p)
            else:
                item.test = "two-proportion z"
                item.detail = f"{old.robust}/{old.n} -> {point.robust}/{point.n}"
                item.p_drop = two_proportion_p(old.robust, old.n, point.robust, point.n)
                item.p_rise = two_proportion_p(point.robust, point.n, old.robust, old.n)
        items.append(item)
    return items


def _auc_item(
    cur: CellRecord, cur_flags: np.ndarray, base: CellRecord | None, base_flags: np.ndarray | None, paired: bool
) -> Item:
    n = cur.points[0].n
    item = Item(cur.model, cur.attack, None, cur.auc, n)
    if base is None:
        return item
    from scipy import stats  # imported here: `bench.suite` imports this module, and scipy.stats costs 0.6 s

    item.baseline, item.n_baseline = base.auc, base.points[0].n
    if paired and base_flags is not None:
        before, now = sample_areas(base_flags, base.epsilons), sample_areas(cur_flags, cur.epsilons)
        item.test = "paired t"
        if np.allclose(before, now):
            item.p_drop = item.p_rise = 1.0
        else:
            item.p_drop = _nan_to_one(stats.ttest_rel(before, now, alternative="greater").pvalue)
            item.p_rise = _nan_to_one(stats.ttest_rel(before, now, alternative="less").pvalue)
    else:
        item.test = "Welch t"
        args = (base.auc, base.auc_sd, item.n_baseline, cur.auc, cur.auc_sd, n)
        item.p_drop = _nan_to_one(stats.ttest_ind_from_stats(*args, equal_var=False, alternative="greater").pvalue)
        item.p_rise = _nan_to_one(stats.ttest_ind_from_stats(*args, equal_var=False, alternative="less").pvalue)
    item.detail = f"sd {base.auc_sd:.3f} -> {cur.auc_sd:.3f}"
    return item


def compare(
    current: Baseline,
    baseline: Baseline | None,
    rules: Sequence[tuple[str, Floor | MaxDrop]] = (),
    *,
    settings: Settings = Settings(),
    baseline_source: str = "baseline",
) -> CheckReport:
    """Check ``current`` (a run frozen with flags) against ``baseline`` (or floors alone) under ``rules``.

    ``rules`` pairs each rule with where it came from (for error messages).
    Raises :class:`BaselineMismatch` for an incompatible baseline and
    :class:`CheckConfigError` for a rule that matches no checked item.
    """
    paired, notes = False, []
    if baseline is not None:
        paired, notes = compatibility(
            current, baseline, source=baseline_source, allow_other_data=settings.allow_other_data
        )
    items: list[Item] = []
    for cell in current.cells:
        flags = current.flag_matrix(cell)
        if flags is None:
            raise CheckConfigError(f"run {current.suite}: cell {cell.model}/{cell.attack} has no per-sample flags")
        base = baseline.cell(cell.model, cell.attack) if baseline is not None else None
        base_flags = baseline.flag_matrix(base) if baseline is not None and base is not None else None
        items += _point_items(cell, flags, base, base_flags, paired, settings.mid_p)
        items.append(_auc_item(cell, flags, base, base_flags, paired))

    for origin, rule in rules:
        if not any(rule.applies_to(item) for item in items):
            grids = "; ".join(
                f"{c.model}/{c.attack} [{_grid(c.epsilons)}]"
                for c in current.cells
                if fnmatch.fnmatchcase(c.model, rule.model) and fnmatch.fnmatchcase(c.attack, rule.attack)
            )
            raise CheckConfigError(
                f"{origin}: rule '{rule.describe()}' matches no checked cell "
                f"(cells of the run with their eps grids: {grids or 'none match the model/attack'})"
            )
    _apply_rules(items, [r for _, r in rules], settings)
    return CheckReport(current.suite, items, settings, baseline_source if baseline else None, paired, notes)


def _apply_rules(items: list[Item], rules: list[Floor | MaxDrop], settings: Settings) -> None:
    compared = [item for item in items if item.p_drop is not None]
    drops = [item.p_drop for item in compared if item.p_drop is not None]
    rises = [item.p_rise for item in compared if item.p_rise is not None]
    if settings.correction == "holm":
        drops, rises = holm(drops), holm(rises)
    for item, p_drop, p_rise in zip(compared, drops, rises, strict=True):
        item.p_drop_adjusted, item.p_rise_adjusted = p_drop, p_rise
    for item in items:
        for rule in rules:
            if isinstance(rule, Floor) and rule.applies_to(item):
                item.floors.append((rule.describe(), item.current >= rule.min))
        if item.baseline is not None:
            item.tolerance = settings.max_auc_drop if item.eps is None else settings.max_drop
            for rule in rules:
                if isinstance(rule, MaxDrop) and rule.applies_to(item):
                    item.tolerance = rule.max_drop
        item.status, item.note = _status(item, settings.alpha)


def _status(item: Item, alpha: float) -> tuple[str, str]:
    broken = [text for text, ok in item.floors if not ok]
    if broken:
        return "below floor", "; ".join(f"floor {text} not met" for text in broken)
    if item.baseline is None:
        return "new", "no baseline for this cell"
    change, tol = item.current - item.baseline, item.tolerance or 0.0
    p_drop, p_rise = item.p_drop_adjusted, item.p_rise_adjusted
    assert p_drop is not None and p_rise is not None
    if -change > tol:
        if p_drop < alpha:
            return "regressed", f"drop {-change:.3f} > {tol:g}, p={p_drop:.2g}"
        return "ok", f"drop {-change:.3f} > {tol:g} but within noise (p={p_drop:.2g})"
    if change > tol and p_rise < alpha:
        return "improved", f"rise {change:.3f}, p={p_rise:.2g}"
    return "ok", ""


# -- output ---------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _signed(value: float | None) -> str:
    return "" if value is None else f"{value:+.3f}"


def _p(value: float | None) -> str:
    return "" if value is None else f"{value:.2g}"


ICONS = {"ok": "✅", "improved": "⬆️", "regressed": "❌", "below floor": "❌", "new": "🆕"}


def markdown(report: CheckReport) -> str:
    """A Markdown summary for a pull-request comment: verdict, notes, then one table row per item."""
    s = report.settings
    lines = [
        f"## bench check: {report.suite}: {'✅' if report.passed else '❌'} {report.verdict}",
        "",
        f"{len(report.items)} checked items; {report.count('regressed')} regressed, "
        f"{report.count('below floor')} below floor, {report.count('improved')} improved, {report.count('new')} new.",
        f"Baseline: {report.baseline_source or 'none (floors only)'}; "
        f"tests: {'paired (same samples)' if report.paired else 'unpaired'}, one-sided, alpha {s.alpha:g}"
        f"{', Holm-corrected' if s.correction == 'holm' else ''}; default tolerances: "
        f"cell drop {s.max_drop:g}, AUC drop {s.max_auc_drop:g}.",
        "",
    ]
    lines += [f"> {note}" for note in report.notes]
    if report.notes:
        lines.append("")
    lines += [
        "| | model | attack | point | baseline | current | change | tolerance | p (adj.) | test | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = {"regressed": 0, "below floor": 0, "improved": 1}
    for item in sorted(report.items, key=lambda it: order.get(it.status, 2)):
        lines.append(
            f"| {ICONS[item.status]} | {item.model} | {item.attack} | {item.name} | {_fmt(item.baseline)} | "
            f"{_fmt(item.current)} | {_signed(item.change)} | {_fmt(item.tolerance, 2)} | "
            f"{_p(item.p_drop_adjusted)} | {item.test} | {item.note} |"
        )
    return "\n".join(lines) + "\n"


def junit_xml(report: CheckReport) -> ET.ElementTree:
    """JUnit XML: one ``testcase`` per checked item (class ``<suite>.<model>.<attack>``, name ``eps=...``/``auc``)."""
    root = ET.Element("testsuites", name="bench check")
    suite = ET.SubElement(
        root,
        "testsuite",
        name=f"bench check {report.suite}",
        tests=str(len(report.items)),
        failures=str(sum(item.failed for item in report.items)),
        errors="0",
        skipped="0",
    )
    for item in report.items:
        case = ET.SubElement(suite, "testcase", classname=f"{report.suite}.{item.model}.{item.attack}", name=item.name)
        summary = (
            f"{item.model}/{item.attack} {item.name}: current {_fmt(item.current)}, baseline {_fmt(item.baseline)}, "
            f"change {_signed(item.change) or 'n/a'}, tolerance {_fmt(item.tolerance, 2) or 'n/a'}, "
            f"p (adjusted) {_p(item.p_drop_adjusted) or 'n/a'}, test {item.test or 'none'}"
            + (f" ({item.detail})" if item.detail else "")
        )
        if item.failed:
            failure = ET.SubElement(case, "failure", message=f"{item.status}: {item.note}", type=item.status)
            failure.text = summary
        ET.SubElement(case, "system-out").text = summary + (f"; {item.note}" if item.note else "")
    ET.indent(root)
    return ET.ElementTree(root)


def write_junit(report: CheckReport, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    junit_xml(report).write(path, encoding="utf-8", xml_declaration=True)
