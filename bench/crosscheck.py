"""Native attacks against their ART counterparts, on identical models, inputs and labels.

Every attack that declares an ART counterpart at registration
(:class:`~bench.attacks.ArtCounterpart`: the parameter mapping, the tolerance,
the pairs' hyperparameters) is cross-checked; nothing here names an attack.
Each :class:`Pair` runs a native attack and the ART class it claims to
reproduce (through the same ``PyTorchClassifier`` adapter that ``art:<Class>``
suites use, :mod:`bench.attacks.art`) at a few epsilons, and compares:

* ``max_abs_diff``: the largest absolute pixel difference between the two
  adversarial batches (ART's raw output, before the harness' own projection);
* ``label_agreement``: the fraction of samples the model labels the same on both;
* ``robust_acc_native``/``robust_acc_art``: pointwise robust accuracy (clean-correct
  and still correct under the attack) of each, and their difference.

Deterministic pairs must agree to ``tolerance`` in ``max_abs_diff`` (FGSM
1e-6; BIM and PGD without random start 1e-5, with 100% label agreement).
Pairs with a random start cannot agree pixel by pixel (our seeded generator vs
NumPy's global one); they pass unless the paired difference of robust accuracy is
significant (exact McNemar test, two-sided, at ``RANDOM_START_ALPHA``), and
``tolerance`` is then the half-width of the 95% interval of that difference.

The native attack is called once per epsilon (no sweep), with early exit off,
because ART runs every step at every eps.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch import nn

from bench import stats
from bench.attacks import ATTACKS, ArtCounterpart, Attack, AttackContext, derive_seed, make_attack
from bench.attacks.art import ArtAttack
from bench.data import DataSplit
from bench.rundir import atomic_write_text, write_json
from bench.types import Norm

CROSSCHECK_COLUMNS = [
    "pair",
    "native",
    "art",
    "model",
    "norm",
    "targeted",
    "eps",
    "n",
    "max_abs_diff",
    "label_agreement",
    "robust_acc_native",
    "robust_acc_art",
    "robust_acc_diff",
    "tolerance",
    "passed",
    "native_seconds",
    "art_seconds",
]
"""Columns of ``crosscheck.csv`` (one row per pair, model and eps); the last two time each side's attack call."""

CROSSCHECK_SAMPLES = 100
"""Samples a suite's cross-check uses (the first of its evaluation data): enough to exercise every
code path, small enough to keep the quickstart short (see :func:`suite_pairs`)."""

EPSILONS: dict[Norm, tuple[float, ...]] = {Norm.LINF: (0.1, 0.3), Norm.L2: (1.0, 2.5)}
"""Default cross-check epsilons per norm (pixel units of [0, 1]): a moderate and a large budget."""

RANDOM_START_ALPHA = 0.001
"""Significance level of the paired test for pairs with random starts (see ``_row``)."""


Criterion = Literal["exact", "interval"]


def art_counterpart(name: str) -> ArtCounterpart | None:
    """The declared ART counterpart of the attack registered as ``name`` (``None``: it has none)."""
    return ATTACKS.abilities(name).art


def crosschecked() -> list[str]:
    """Registered attacks that declare an ART counterpart, in registration order."""
    return ATTACKS.declaring(lambda abilities: abilities.art is not None)


def art_mappings() -> dict[str, Callable[[Attack, float], tuple[str, dict[str, Any]]]]:
    """Registry name -> ``(ART class, ART options)`` of an instance at one eps (``eps`` excluded), as declared."""
    return {name: c.to_art for name in crosschecked() if (c := art_counterpart(name)) is not None}


@dataclass(frozen=True)
class Pair:
    """One native attack configuration and how its ART counterpart is judged.

    Attributes:
        name: the pair's id (column ``pair``), e.g. ``fgsm_linf_targeted``.
        native: registry name of the native attack.
        params: its hyperparameters; targets are drawn once by the native attack (seeded) and given to both.
        criterion: "exact" (max abs diff <= tolerance) or "interval" (random starts).
        tolerance: max abs diff allowed by "exact".
        require_label_agreement: "exact" also needs 100% label agreement.
        epsilons: pixel units of the pair's norm.
        target_class: a suite's ``target_class`` (every sample driven to it), else the attack's target mode.
    """

    name: str
    native: str
    params: Mapping[str, Any]
    criterion: Criterion = "exact"
    tolerance: float = 1e-6
    require_label_agreement: bool = False
    epsilons: tuple[float, ...] = ()
    target_class: int | None = None

    def native_attack(self) -> Attack:
        return make_attack(self.native, **self.params)

    @property
    def targeted(self) -> bool:
        return bool(self.params.get("targeted", False))

    @property
    def norm(self) -> Norm:
        return Norm(self.params.get("norm", "linf"))

    def art_attack(self, eps: float) -> ArtAttack:
        native = self.native_attack()
        counterpart = art_counterpart(self.native)
        if counterpart is None:
            raise ValueError(f"attack {self.native!r} declares no ART counterpart")
        art_class, options = counterpart.to_art(native, eps)
        return ArtAttack(attack_class=art_class, options=options, target_mode="given")


def default_pairs() -> list[Pair]:
    """Every registered attack with an ART counterpart, across norm x targeted (+ its random-start pairs).

    Rows are ordered by norm, then targeting, then registration order; the
    random-start pairs (judged by a paired test) come last.
    """
    pairs: list[Pair] = []
    declared = [(name, c) for name in crosschecked() if (c := art_counterpart(name)) and c.in_default_matrix]
    for norm in (Norm.LINF, Norm.L2):
        for targeted in (False, True):
            suffix = f"{norm.value}{'_targeted' if targeted else ''}"
            base = {"norm": norm.value, "targeted": targeted}
            for name, counterpart in declared:
                pairs.append(
                    Pair(
                        f"{name}_{suffix}",
                        name,
                        {**base, **counterpart.pair_params},
                        tolerance=counterpart.tolerance,
                        require_label_agreement=counterpart.require_label_agreement,
                        epsilons=EPSILONS[norm],
                    )
                )
    for name, counterpart in declared:
        if counterpart.random_pair_params is None:
            continue
        for norm in (Norm.LINF, Norm.L2):
            pairs.append(
                Pair(
                    f"{name}_{norm.value}_random_start",
                    name,
                    {"norm": norm.value, **counterpart.random_pair_params},
                    criterion="interval",
                    epsilons=EPSILONS[norm],
                )
            )
    return pairs


def suite_pairs(attacks: Sequence[Any], epsilons_for: Callable[[Any], Sequence[float]]) -> list[Pair]:
    """Pairs for a suite's own attacks that declare an ART counterpart.

    Each attack spec (``name``, ``label``, ``params``) is compared with its
    hyperparameters as written, except those the counterpart forces (no early
    exit: ART iterates every step). One epsilon per pair: the middle non-zero
    epsilon of the attack's grid. Attacks without a counterpart, or run with ``bpda``, are skipped.
    """
    pairs: list[Pair] = []
    for spec in attacks:
        counterpart = art_counterpart(spec.name)
        if counterpart is None or spec.params.get("bpda", False) is not False:  # ART has no BPDA mode
            continue
        params = {**spec.params, **counterpart.forced_params}
        native = make_attack(spec.name, **params)
        nonzero = [e for e in epsilons_for(spec) if e > 0]
        if not nonzero:
            continue
        stochastic = counterpart.stochastic(native)
        pairs.append(
            Pair(
                spec.label or spec.name,
                spec.name,
                params,
                criterion="interval" if stochastic else "exact",
                tolerance=counterpart.tolerance,
                require_label_agreement=counterpart.require_label_agreement and not stochastic,
                epsilons=(nonzero[len(nonzero) // 2],),
                target_class=spec.target_class,
            )
        )
    return pairs


@dataclass
class _Batch:
    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    data: DataSplit
    clean_correct: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.clean_correct = self.predict(self.x) == self.y.cpu().numpy()

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> np.ndarray:
        return self.model(x).argmax(1).cpu().numpy()  # type: ignore[no-any-return]


def compare_pair(
    pair: Pair, model: nn.Module, data: DataSplit, *, model_name: str, seed: int = 0
) -> list[dict[str, Any]]:
    """Rows of :data:`CROSSCHECK_COLUMNS` for one pair on one model, one per eps of the pair."""
    device = next(model.parameters()).device
    batch = _Batch(model, data.x.to(device), data.y.to(device), data)
    native = pair.native_attack()
    rows = []
    for eps in pair.epsilons:
        ctx = AttackContext(seed=derive_seed(seed, model_name, pair.name, eps))
        given = None if pair.target_class is None else torch.full_like(batch.y, pair.target_class)
        target = native.targets(model, batch.x, batch.y, target=given, ctx=ctx)
        start = time.perf_counter()
        x_native = native(model, batch.x, batch.y, eps, target=target, bounds=data.bounds, ctx=ctx)
        native_seconds = time.perf_counter() - start
        art = pair.art_attack(eps)
        start = time.perf_counter()
        x_art = art.generate(
            model, batch.x, batch.y, eps, target=target, bounds=data.bounds, ctx=AttackContext(seed=ctx.seed)
        )
        art_seconds = time.perf_counter() - start
        row = _row(pair, art, batch, model_name, eps, x_native, x_art)
        rows.append(row | {"native_seconds": native_seconds, "art_seconds": art_seconds})
    return rows


def _row(
    pair: Pair, art: ArtAttack, batch: _Batch, model_name: str, eps: float, x_native: torch.Tensor, x_art: torch.Tensor
) -> dict[str, Any]:
    y = batch.y.cpu().numpy()
    pred_native, pred_art = batch.predict(x_native), batch.predict(x_art)
    n = len(y)
    robust_native = int((batch.clean_correct & (pred_native == y)).sum())
    robust_art = int((batch.clean_correct & (pred_art == y)).sum())
    ra_native, ra_art = robust_native / n, robust_art / n
    max_abs = float((x_native - x_art).abs().max()) if n else 0.0
    agreement = float((pred_native == pred_art).mean()) if n else 1.0
    if pair.criterion == "exact":
        tolerance = pair.tolerance
        passed = max_abs <= tolerance and (agreement == 1.0 or not pair.require_label_agreement)
    else:
        # Random starts draw different noise here and in ART, so the two robust accuracies differ by
        # sampling alone; they are paired (same samples), so the test is McNemar's on the discordant
        # samples, at RANDOM_START_ALPHA so that only a systematic difference fails. The tolerance
        # column holds the half-width of the 95% interval of the paired difference.
        robust_n = batch.clean_correct & (pred_native == y)
        robust_a = batch.clean_correct & (pred_art == y)
        lost, gained = int((robust_n & ~robust_a).sum()), int((~robust_n & robust_a).sum())
        tolerance = stats.paired_difference_halfwidth(lost, gained, n)
        passed = stats.mcnemar_p(lost, gained, two_sided=True, mid_p=False) >= RANDOM_START_ALPHA
    return {
        "pair": pair.name,
        "native": repr(pair.native_attack()),
        "art": repr(art),
        "model": model_name,
        "norm": pair.norm.value,
        "targeted": pair.targeted,
        "eps": float(eps),
        "n": n,
        "max_abs_diff": max_abs,
        "label_agreement": agreement,
        "robust_acc_native": ra_native,
        "robust_acc_art": ra_art,
        "robust_acc_diff": ra_art - ra_native,
        "tolerance": tolerance,
        "passed": bool(passed),
    }


def crosscheck_models(
    models: Mapping[str, nn.Module],
    data: DataSplit,
    *,
    pairs: Sequence[Pair] | None = None,
    seed: int = 0,
    n: int | None = CROSSCHECK_SAMPLES,
    max_epsilons: int | None = None,
) -> pd.DataFrame:
    """The cross-check table (:data:`CROSSCHECK_COLUMNS`) of every pair on every model, on the first ``n`` samples.

    ``max_epsilons``: use only the first that many epsilons of each pair (all by default).
    """
    subset = data.subset(n)
    rows: list[dict[str, Any]] = []
    chosen = list(pairs if pairs is not None else default_pairs())
    if max_epsilons is not None:
        chosen = [dataclasses.replace(p, epsilons=p.epsilons[:max_epsilons]) for p in chosen]
    for pair in chosen:
        for name, model in models.items():
            rows.extend(compare_pair(pair, model, subset, model_name=name, seed=seed))
    return pd.DataFrame(rows, columns=CROSSCHECK_COLUMNS)


def pair_results(table: pd.DataFrame) -> dict[str, bool]:
    """Per pair: whether every row (all models, all epsilons) passed."""
    return {str(pair): bool(rows["passed"].all()) for pair, rows in table.groupby("pair", sort=False)}


def write_crosscheck(table: pd.DataFrame, directory: Path, *, meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write ``crosscheck.csv`` and ``crosscheck.json`` into ``directory``; returns the JSON document."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_text(directory / "crosscheck.csv", table[CROSSCHECK_COLUMNS].to_csv(index=False))
    doc = {
        **(meta or {}),
        "passed": bool(table["passed"].all()) if len(table) else True,
        "pairs": pair_results(table),
        "criteria": criteria(),
        "rows": json.loads(table[CROSSCHECK_COLUMNS].to_json(orient="records")),
    }
    write_json(directory / "crosscheck.json", doc)
    return doc


def criteria() -> dict[str, str]:
    """How each declared counterpart is judged, in words (attacks with the same criterion share a line)."""
    groups: dict[tuple[float, bool], list[str]] = {}
    random: list[str] = []
    for name in crosschecked():
        counterpart = art_counterpart(name)
        assert counterpart is not None
        if not counterpart.in_default_matrix:  # a randomized ensemble (reliable): the paired test only
            random.append(name)
            continue
        groups.setdefault((counterpart.tolerance, counterpart.require_label_agreement), []).append(name)
        if counterpart.random_pair_params is not None:
            random.append(name)
    out: dict[str, str] = {}
    for (tolerance, labels), names in groups.items():
        key = ", ".join(names) + (" (no random start)" if set(names) & set(random) else "")
        out[key] = f"max_abs_diff <= {tolerance:g}" + (" and label_agreement == 1" if labels else "")
    if random:
        out[f"{', '.join(random)} (random start)"] = (
            f"paired difference not significant (exact McNemar, alpha {RANDOM_START_ALPHA:g})"
        )
    return out


def metric_name(pair: str) -> str:
    """MLflow metric of a pair's verdict: ``crosscheck_passed_<pair>``."""
    safe = "".join(c if c.isalnum() or c in "_-." else "_" for c in pair)
    return f"crosscheck_passed_{safe}"
