"""Sanity flags: signs that a robustness number should not be trusted, each explained in one line.

In the spirit of AutoAttack's checks (``autoattack/checks.py``): every flag has
a code, a severity, the cell it is about and a fixed one-line explanation of
why it matters (:data:`EXPLANATIONS`). Flags are computed from what a run
directory holds, so a report of an old run raises the same flags.

Attack families are compared only between untargeted attacks of the same norm
at the same eps. Each attack's family is what it declared at registration, as
the run directory's manifest records it (``manifest["attacks"][attack id]["family"]``);
a run without that record (older runs) raises no family flag:

* an iterative gradient attack (BIM, PGD) should be at least as strong as a one-step one (FGSM);
* any gradient attack should be at least as strong as random noise of the same budget.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from bench.types import AttackFamily

GRADIENT = frozenset({AttackFamily.ONE_STEP, AttackFamily.ITERATIVE})
"""Families that follow the loss gradient (expected to beat noise of the same budget)."""

EXPLANATIONS = {
    "eps0-accuracy": "At eps 0 an attack must return its input, so accuracy there must equal clean accuracy; "
    "a difference means the attack leaves its budget or the model is not deterministic (train-mode dropout/BN). "
    "Linf, l2 and l0 attacks on inputs within the bounds score eps 0 with the clean pass itself, so it concerns "
    "patch attacks and out-of-bounds inputs; the model checks refuse a model whose repeated calls differ. "
    "Remedy: put the model in eval mode (or fix the attack's eps-0 path).",
    "curve-rises": "A larger budget contains every smaller one, so accuracy should not rise with eps; "
    "a rising curve means the attack misses examples it found at a smaller eps (weak or masked gradients). "
    "Remedy: more steps or restarts, a stronger attack (apgd, reliable), or bpda: true on a masked model.",
    "iterative-weaker-than-fgsm": "PGD/BIM take several steps inside the same ball FGSM steps once in; "
    "being weaker than FGSM points to a bad step size, too few steps or gradient masking. Remedy: more steps "
    "or another step size; on a masked model, bpda: true or a black-box attack (square, reliable).",
    "gradient-weaker-than-noise": "A gradient attack weaker than random noise of the same budget is not "
    "following the gradient: the classic sign of gradient masking or a broken attack. Remedy: run the gradient "
    "attack with bpda: true (the model's declared non-differentiable layers get a surrogate gradient) or trust "
    "a black-box attack's number instead (square, reliable).",
    "probability-outputs": "The model's outputs look like probabilities (or log-probabilities); cross-entropy "
    "gradients of softmaxed outputs vanish, so every gradient attack is weakened. Remedy: return the logits "
    "(drop the final softmax), or use a scale-invariant loss (apgd with loss: dlr).",
    "zero-gradients": "Many samples have an input gradient of exactly zero at the clean point: gradient attacks "
    "have nothing to follow (saturated softmax, quantization, non-differentiable layers), i.e. gradient masking. "
    "Remedy: declare the non-differentiable layer (bench.attacks.bpda.NonDifferentiable) and run the gradient "
    "attacks with bpda: true, or use a black-box attack (square, reliable).",
    "budget-exceeded": "Some perturbation is larger than eps in the attack's norm: the numbers are not robust "
    "accuracy at that budget. Remedy: fix the attack's projection (a plugin attack must stay inside its ball).",
    "crosscheck-failed": "The native attack and its ART counterpart disagree beyond tolerance on identical inputs. "
    "Remedy: read the cross-check table's parameters (bench crosscheck) and fix the native attack or its mapping.",
}


@dataclass(frozen=True)
class Flag:
    """One sanity flag. ``severity``: ``error`` (numbers are wrong) or ``warning`` (numbers are suspicious)."""

    code: str
    severity: str
    subject: str
    message: str

    @property
    def explanation(self) -> str:
        return EXPLANATIONS[self.code]


def sanity_flags(
    results: pd.DataFrame,
    *,
    models: dict[str, Any] | None = None,
    crosscheck: pd.DataFrame | None = None,
    attacks: Mapping[str, Mapping[str, Any]] | None = None,
    rise_tolerance: float = 0.01,
    weaker_margin: float = 0.01,
    zero_gradient_threshold: float = 0.1,
    budget_tolerance: float = 1e-5,
) -> list[Flag]:
    """Every flag raised by one run.

    Args:
        results: RESULT_COLUMNS rows of the run.
        models: ``models.json`` (``output_warnings``, ``zero_gradient_fraction`` per model).
        crosscheck: ``crosscheck.csv`` rows (``passed`` column), if the suite ran one.
        attacks: the manifest's ``attacks`` record (attack id -> ``{"family": ...}``); without it
            (older runs) the family flags are not raised.
        rise_tolerance: pointwise accuracy may rise by this much (in [0, 1]) between grid eps
            before it is flagged (one-step attacks wobble by a sample or two). Default 0.01.
        weaker_margin: an attack is "weaker" when its robust accuracy exceeds the other's
            by more than this (in [0, 1]). Default 0.01.
        zero_gradient_threshold: flag a model when more than this fraction of samples has an
            all-zero input gradient. Default 0.1.
        budget_tolerance: float32 slack (pixel units) allowed above eps. Default 1e-5.
    """
    flags: list[Flag] = []
    flags += _eps0_flags(results)
    flags += _rising_flags(results, rise_tolerance)
    flags += _family_flags(results, families(attacks or {}), weaker_margin)
    flags += _budget_flags(results, budget_tolerance)
    flags += _model_flags(models or {}, zero_gradient_threshold)
    if crosscheck is not None and "passed" in crosscheck.columns:
        for row in crosscheck[~crosscheck["passed"].astype(bool)].itertuples():
            flags.append(
                Flag(
                    "crosscheck-failed",
                    "error",
                    f"{getattr(row, 'model', '?')} / {getattr(row, 'pair', '?')} @ eps {getattr(row, 'eps', '?')}",
                    f"robust accuracy native {getattr(row, 'robust_acc_native', float('nan')):.3f} vs "
                    f"ART {getattr(row, 'robust_acc_art', float('nan')):.3f}, max |diff| "
                    f"{getattr(row, 'max_abs_diff', float('nan')):.3g} (tolerance {getattr(row, 'tolerance', '?')})",
                )
            )
    return flags


def _cells(results: pd.DataFrame) -> Any:
    return results.groupby(["model", "attack"], sort=False)


def _eps0_flags(results: pd.DataFrame) -> list[Flag]:
    out = []
    at0 = results[(results["eps"] == 0) & (results["norm"] != "none")]
    for row in at0.itertuples():
        # One sample's worth of difference, not float noise.
        if abs(row.robust_accuracy_pointwise - row.clean_accuracy) * row.n >= 0.5:
            out.append(
                Flag(
                    "eps0-accuracy",
                    "error",
                    f"{row.model} / {row.attack} @ eps 0",
                    f"accuracy at eps 0 is {row.robust_accuracy_pointwise:.3f}, "
                    f"clean accuracy {row.clean_accuracy:.3f}",
                )
            )
    return out


def _rising_flags(results: pd.DataFrame, tolerance: float) -> list[Flag]:
    out = []
    for (model, attack), cell in _cells(results):
        if (cell["norm"] == "none").all():
            continue
        cell = cell.sort_values("eps")
        eps = cell["eps"].to_numpy()
        for column, tol, severity in (
            ("robust_accuracy", 0.0, "error"),
            ("robust_accuracy_pointwise", tolerance, "warning"),
        ):
            values = cell[column].to_numpy()
            rises = [(eps[i], eps[i + 1], values[i + 1] - values[i]) for i in range(len(values) - 1)]
            worst = max(rises, key=lambda r: r[2], default=None)
            if worst is not None and worst[2] > tol + 1e-12:
                out.append(
                    Flag(
                        "curve-rises",
                        severity,
                        f"{model} / {attack}",
                        f"{column.replace('_', ' ')} rises by {worst[2]:.3f} from eps {worst[0]:g} to {worst[1]:g}",
                    )
                )
    return out


def families(attacks: Mapping[str, Mapping[str, Any]]) -> dict[str, AttackFamily]:
    """Attack id -> declared family, from a manifest's ``attacks`` record (unknown families are skipped)."""
    out: dict[str, AttackFamily] = {}
    for attack_id, record in attacks.items():
        try:
            out[str(attack_id)] = AttackFamily(record.get("family"))
        except (ValueError, AttributeError):
            continue
    return out


def _family_flags(results: pd.DataFrame, family: Mapping[str, AttackFamily], margin: float) -> list[Flag]:
    """One flag per (model, norm, attack, weaker-than attack): every eps where it happens, and the largest gap."""
    out: list[Flag] = []
    if not family:
        return out
    untargeted = results[(~results["targeted"].astype(bool)) & (results["eps"] > 0) & (results["norm"] != "none")]
    found: dict[tuple[str, str, str, str, str], list[tuple[float, float, float]]] = {}
    for (model, norm, eps), group in untargeted.groupby(["model", "norm", "eps"], sort=False):
        rows = list(
            group[["attack", "robust_accuracy"]].itertuples()
        )  # only the columns read: itertuples pays per column
        for strong in rows:
            for weak in rows:
                code = _expected_stronger(family.get(str(strong.attack)), family.get(str(weak.attack)))
                if code is not None and strong.robust_accuracy - weak.robust_accuracy > margin:
                    key = (code, str(model), str(norm), str(strong.attack), str(weak.attack))
                    found.setdefault(key, []).append((float(eps), strong.robust_accuracy, weak.robust_accuracy))
    for (code, model, norm, strong, weak), at in found.items():
        at.sort()
        eps, high, low = max(at, key=lambda t: (t[1] - t[2], -t[0]))
        where = ", ".join(f"{e:g}" for e, _, _ in at)
        out.append(
            Flag(
                code,
                "warning",
                f"{model} / {strong} vs {weak} @ {norm} eps {where}",
                f"{strong} leaves more samples robust than {weak} at {len(at)} eps; largest gap at eps {eps:g}: "
                f"{high:.3f} vs {low:.3f} (+{high - low:.3f})",
            )
        )
    return out


def _expected_stronger(attack: AttackFamily | None, other: AttackFamily | None) -> str | None:
    """The flag code if an attack of family ``attack`` is expected to be at least as strong as one of ``other``."""
    if attack is AttackFamily.ITERATIVE and other is AttackFamily.ONE_STEP:
        return "iterative-weaker-than-fgsm"
    if attack in GRADIENT and other is AttackFamily.NOISE:
        return "gradient-weaker-than-noise"
    return None


def _budget_flags(results: pd.DataFrame, tolerance: float) -> list[Flag]:
    out = []
    for norm, column in (("linf", "max_linf"), ("l2", "max_l2")):
        over = results[(results["norm"] == norm) & (results[column] > results["eps"] + tolerance)]
        for row in over.itertuples():
            out.append(
                Flag(
                    "budget-exceeded",
                    "error",
                    f"{row.model} / {row.attack} @ eps {row.eps:g}",
                    f"largest {norm} perturbation {getattr(row, column):.4g} > eps {row.eps:g}",
                )
            )
    return out


def _model_flags(models: dict[str, Any], threshold: float) -> list[Flag]:
    out = []
    for model, info in models.items():
        for warning in info.get("output_warnings") or []:
            out.append(Flag("probability-outputs", "warning", str(model), str(warning)))
        zero = info.get("zero_gradient_fraction")
        if zero is not None and zero > threshold:
            out.append(
                Flag(
                    "zero-gradients",
                    "warning",
                    str(model),
                    f"{zero:.1%} of samples have an all-zero loss gradient at the clean input "
                    f"(threshold {threshold:.0%})",
                )
            )
    return out
