"""The original AutoAttack (Croce & Hein; ``pyautoattack`` from the package index) as a second reference.

``bench crosscheck --autoattack`` runs, on the same model, samples, labels and eps, each native attack and the
original code's counterpart in the same process, back to back (the native first):

* ``apgd`` against APGD-CE, ``apgd_t`` against APGD-T (9 target classes) and ``reliable`` against the standard
  version (APGD-CE, APGD-T, FAB-T, Square with 5,000 queries), each with the standard version's settings
  (one restart); ``reliable`` leaves FAB-T out, so the ensembles differ by that member.

Per pair: the robust accuracy of both, the samples broken by only one side, the paired McNemar test that the
native attack is not significantly weaker (one-sided, exact, at ``alpha`` 0.001, the cross-check's level) and the
time ratio (original / native). The optional package is never vendored: without it the comparison is skipped
with one line saying how to install it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from bench import stats
from bench.attacks import AttackContext, make_attack
from bench.data import DataSplit

PAIRS = {"apgd": ["apgd-ce"], "apgd_t": ["apgd-t"], "reliable": ["apgd-ce", "apgd-t", "fab-t", "square"]}
"""Native attack -> the original AutoAttack members it is compared with (the standard version's settings)."""
ALPHA = 0.001
MISSING = (
    "original AutoAttack comparison skipped: the optional package pyautoattack is not installed "
    "(pip install -e '.[autoattack]')"
)


def available() -> bool:
    """Whether ``pyautoattack`` can be imported here."""
    try:
        import pyautoattack  # noqa: F401  # optional reference package: only whether it imports
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class AutoAttackComparison:
    """One native attack against the original code on one model and eps."""

    pair: str
    original: str
    model: str
    eps: float
    n: int
    robust_native: float
    robust_original: float
    only_native: int
    only_original: int
    p_weaker: float
    seconds_native: float
    seconds_original: float
    passed: bool

    @property
    def time_ratio(self) -> float:
        return self.seconds_original / max(self.seconds_native, 1e-9)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "time_ratio": self.time_ratio}


def original_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, members: list[str], *, seed: int,
                    batch_size: int) -> torch.Tensor:  # fmt: skip
    """The original AutoAttack's ``members`` (standard-version settings) on ``x`` ``(N, C, H, W)`` in [0, 1]."""
    from pyautoattack import AutoAttack  # optional reference package (the caller checked it is installed)

    logging.getLogger("auto-attack").setLevel(logging.WARNING)
    runner = AutoAttack(model, norm="Linf", eps=eps, version="standard", seed=seed, device=x.device)
    runner.verbose = False
    runner.attacks_to_run = list(members)
    x_adv, _ = runner.run_standard_evaluation(x, y, batch_size=batch_size)
    return x_adv


def compare_with_autoattack(
    models: dict[str, nn.Module],
    data: DataSplit,
    *,
    eps: float,
    pairs: tuple[str, ...] = tuple(PAIRS),
    seed: int = 0,
    batch_size: int = 500,
) -> list[AutoAttackComparison]:
    """Every pair of :data:`PAIRS` on every model, at ``eps`` (Linf) on all of ``data``."""
    rows = []
    for name, model in models.items():
        model = model.eval()
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        x, y = data.x.to(device), data.y.to(device)
        for pair in pairs:
            native = make_attack(pair)
            tick = time.perf_counter()
            ours = native(model, x, y, eps, bounds=data.bounds, ctx=AttackContext(seed=seed, batch_size=batch_size))
            seconds_native = time.perf_counter() - tick
            tick = time.perf_counter()
            theirs = original_attack(model, x, y, eps, PAIRS[pair], seed=seed, batch_size=batch_size)
            seconds_original = time.perf_counter() - tick
            with torch.no_grad():
                robust_ours = model(ours).argmax(1) == y
                robust_theirs = model(theirs).argmax(1) == y
            # ours weaker: samples it left robust that the original broke (its "losses" against the original)
            only_original = int((robust_ours & ~robust_theirs).sum())
            only_native = int((~robust_ours & robust_theirs).sum())
            p = stats.mcnemar_p(only_original, only_native, mid_p=False)
            rows.append(
                AutoAttackComparison(
                    pair=pair,
                    original="AutoAttack standard" if pair == "reliable" else PAIRS[pair][0].upper(),
                    model=name,
                    eps=eps,
                    n=len(y),
                    robust_native=float(robust_ours.float().mean()),
                    robust_original=float(robust_theirs.float().mean()),
                    only_native=only_native,
                    only_original=only_original,
                    p_weaker=p,
                    seconds_native=seconds_native,
                    seconds_original=seconds_original,
                    passed=p >= ALPHA,
                )
            )
    return rows
