"""The regression gate: compare a run with a baseline under rules, aware of sampling noise.

Checked items are the points (model, attack, eps) of every cell of the run and
each cell's curve AUC. An item is

* **below floor** when a floor rule (``min``) is not met by its point estimate;
* **regressed** when its drop from the baseline exceeds the tolerance
  (``max_drop``) *and* the drop is significant at ``alpha`` after a Holm
  correction over all compared items (so the whole gate, not each of its
  dozens of items, cries wolf at most ``alpha`` of the time on pure noise);
* **improved** when it rose by more than the tolerance, significantly;
* **changed** when results must be identical and are not: the model's weights
  equal the baseline's (sha256), the samples are the same and the attack is
  reproducible, yet a sample's robust flag flipped at this eps (more flips
  than an ``AllowFlips`` rule's ``max_flips``; :mod:`bench.gate.exact`);
* **new** when the baseline has no such cell; otherwise **ok**.

Tests (one-sided, H0: no drop):

* same samples in both runs (equal data digest and per-sample flags on both
  sides): McNemar's exact test on the discordant pairs, mid-p by default
  (b = robust before and not now, c = the reverse; b ~ Binomial(b + c, 1/2));
* otherwise: the pooled two-proportion z-test, with Wilson 95% intervals shown;
* AUC: per-sample areas under the robust-flag curve (their mean is the AUC),
  compared with a paired t-test on the same samples, else Welch's t-test from
  the stored means and standard deviations.

Rules are pydantic models (:mod:`bench.suite.rules`), written in a suite's ``checks:`` list or on
the command line; the Markdown and JUnit renderings are :mod:`bench.gate.render`.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from bench import stats
from bench.gate import exact
from bench.gate.baseline import Baseline, BaselineError, CellRecord, sample_areas
from bench.suite.rules import Floor, GateRule, MaxDrop, RuleError
from bench.types import eps_label

DEFAULT_ALPHA = 0.05
DEFAULT_MAX_DROP = 0.02
DEFAULT_MAX_AUC_DROP = 0.02


class CheckConfigError(RuleError):
    """Rules or settings that cannot be applied (a rule that matches nothing, a bad option)."""


class BaselineMismatch(BaselineError):
    """A baseline that measured something else than the run (other suite, data or eps grid)."""


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


TOLERANCE_SLACK = 1e-9
"""A change must exceed its tolerance by more than float rounding to count (accuracy units)."""


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
    flips: exact.Flips | None = None  # per-sample changes, where the results must be identical (None: not compared so)
    status: str = "ok"
    note: str = ""
    metric: str = "robust_accuracy"  # or "certified": a certification cell's certified accuracy (attack: certifier)

    @property
    def name(self) -> str:
        return "auc" if self.eps is None else f"{'certified ' * (self.metric == 'certified')}eps={eps_label(self.eps)}"

    @property
    def change(self) -> float | None:
        return None if self.baseline is None else self.current - self.baseline

    @property
    def failed(self) -> bool:
        return self.status in ("regressed", "below floor", "changed")


@dataclass
class CheckReport:
    """Everything ``bench check`` found; ``exit_code`` is 0 (pass) or 1 (regression, floor or change)."""

    suite: str
    items: list[Item]
    settings: Settings
    baseline_source: str | None
    paired: bool
    notes: list[str] = field(default_factory=list)
    weights: list[exact.WeightsCheck] = field(default_factory=list)  # per model of the run

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
        counts = ", ".join(f"{self.count(status)} {status}" for status in ("regressed", "below floor", "changed"))
        return f"FAIL: {counts}"


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
                item.p_drop = stats.mcnemar_p(losses, gains, mid_p=mid_p)
                item.p_rise = stats.mcnemar_p(gains, losses, mid_p=mid_p)
            else:
                item.test = "two-proportion z"
                item.detail = f"{old.robust}/{old.n} -> {point.robust}/{point.n}"
                item.p_drop = stats.two_proportion_p(old.robust, old.n, point.robust, point.n)
                item.p_rise = stats.two_proportion_p(point.robust, point.n, old.robust, old.n)
        items.append(item)
    return items


def _auc_item(
    cur: CellRecord, cur_flags: np.ndarray, base: CellRecord | None, base_flags: np.ndarray | None, paired: bool
) -> Item:
    n = cur.points[0].n
    item = Item(cur.model, cur.attack, None, cur.auc, n)
    if base is None:
        return item
    from scipy import stats as scipy_stats  # heavy (0.6 s): only a comparison with a baseline pays for it

    item.baseline, item.n_baseline = base.auc, base.points[0].n
    if paired and base_flags is not None:
        before, now = sample_areas(base_flags, base.epsilons), sample_areas(cur_flags, cur.epsilons)
        item.test = "paired t"
        if np.allclose(before, now):
            item.p_drop = item.p_rise = 1.0
        else:
            item.p_drop = _nan_to_one(scipy_stats.ttest_rel(before, now, alternative="greater").pvalue)
            item.p_rise = _nan_to_one(scipy_stats.ttest_rel(before, now, alternative="less").pvalue)
    else:
        item.test = "Welch t"
        args = (base.auc, base.auc_sd, item.n_baseline, cur.auc, cur.auc_sd, n)
        item.p_drop = _nan_to_one(
            scipy_stats.ttest_ind_from_stats(*args, equal_var=False, alternative="greater").pvalue
        )
        item.p_rise = _nan_to_one(scipy_stats.ttest_ind_from_stats(*args, equal_var=False, alternative="less").pvalue)
    item.detail = f"sd {base.auc_sd:.3f} -> {cur.auc_sd:.3f}"
    return item


def compare(
    current: Baseline,
    baseline: Baseline | None,
    rules: Sequence[tuple[str, GateRule]] = (),
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
    models = list(dict.fromkeys(c.model for c in current.cells))
    weights = exact.compare_weights(models, current.models, None if baseline is None else baseline.models)
    notes += [w.note for w in weights if baseline is not None]
    same = {w.model for w in weights if w.same}
    kernels = baseline is not None and exact.same_numerics(current.source, baseline.source)
    if baseline is not None and same and not kernels:
        notes.append(exact.numerics_note(current.source, baseline.source))
    items: list[Item] = []
    exact_cells: list[str] = []
    indices = current.sample_indices()
    for cell in current.cells:
        flags = current.flag_matrix(cell)
        if flags is None:
            raise CheckConfigError(f"run {current.suite}: cell {cell.model}/{cell.attack} has no per-sample flags")
        base = baseline.cell(cell.model, cell.attack) if baseline is not None else None
        base_flags = baseline.flag_matrix(base) if baseline is not None and base is not None else None
        points = _point_items(cell, flags, base, base_flags, paired, settings.mid_p)
        exactly = kernels and cell.reproducible and cell.model in same
        if exactly and paired and base_flags is not None and indices is not None:
            exact_cells.append(f"{cell.model}/{cell.attack}")
            for i, item in enumerate(points):
                item.flips = exact.point_flips(base_flags[i], flags[i], indices)
        for item in points if cell.kind == "certified" else ():
            item.metric = "certified"  # a certification cell: certified accuracy per eps, no AUC item
        items += points if cell.kind == "certified" else [*points, _auc_item(cell, flags, base, base_flags, paired)]
    if exact_cells:
        notes.append(
            "per-sample results compared exactly (same weights, samples and numerics; reproducible attack): "
            + ", ".join(exact_cells)
        )

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
    return CheckReport(current.suite, items, settings, baseline_source if baseline else None, paired, notes, weights)


def _apply_rules(items: list[Item], rules: list[GateRule], settings: Settings) -> None:
    compared = [item for item in items if item.p_drop is not None]
    drops = [item.p_drop for item in compared if item.p_drop is not None]
    rises = [item.p_rise for item in compared if item.p_rise is not None]
    if settings.correction == "holm":
        drops, rises = stats.holm(drops), stats.holm(rises)
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
        item.status, item.note = exact.flip_verdict(
            *_status(item, settings.alpha), item.flips, exact.allowed_flips(rules, item)
        )


def _status(item: Item, alpha: float) -> tuple[str, str]:
    broken = [text for text, ok in item.floors if not ok]
    if broken:
        return "below floor", "; ".join(f"floor {text} not met" for text in broken)
    if item.baseline is None:
        return "new", "no baseline for this cell"
    change, tol = item.current - item.baseline, item.tolerance or 0.0
    p_drop, p_rise = item.p_drop_adjusted, item.p_rise_adjusted
    assert p_drop is not None and p_rise is not None
    # in counts of samples a drop can equal the tolerance exactly (901 -> 871 of 1,000 is 0.030):
    # float rounding must not turn "equal" into "exceeds"
    if -change > tol + TOLERANCE_SLACK:
        if p_drop < alpha:
            return "regressed", f"drop {-change:.3f} > {tol:g}, p={p_drop:.2g}"
        return "ok", f"drop {-change:.3f} > {tol:g} but within noise (p={p_drop:.2g})"
    if change > tol + TOLERANCE_SLACK and p_rise < alpha:
        return "improved", f"rise {change:.3f}, p={p_rise:.2g}"
    return "ok", ""
