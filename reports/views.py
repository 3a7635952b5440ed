"""Row views of a run for the report and the CLI: unbounded attacks and the ART cross-check table."""

from __future__ import annotations

import re

import pandas as pd


def unbounded_rows(results: pd.DataFrame) -> list[dict[str, object]]:
    """Attacks without a budget (norm ``none``: fooling images, targeted ascent): one row per cell.

    They have no eps axis, so the report shows what they achieved and at what size
    instead of a curve: success rate (among clean-correct samples), robust accuracy,
    and the mean and largest Linf and L2 size of what they produced.
    """
    rows = []
    for (model, attack), cell in results[results["norm"] == "none"].groupby(["model", "attack"], sort=False):
        last = cell.sort_values("eps").iloc[-1]
        rows.append(
            {
                "model": str(model),
                "attack": str(attack),
                "targeted": bool(last["targeted"]),
                "n": int(last["n"]),
                "clean": float(last["clean_accuracy"]),
                "success_rate": float(last["attack_success_rate"]),
                "robust_accuracy": float(last["robust_accuracy"]),
                "mean_linf": float(last["mean_linf"]),
                "max_linf": float(last["max_linf"]),
                "mean_l2": float(last["mean_l2"]),
                "max_l2": float(last["max_l2"]),
            }
        )
    return rows


def compact_call(text: str, width: int = 60) -> str:
    """An attack's repr in a compact form: ``PGD(eps_step=0.01, max_iter=40, …)``, enum reprs reduced to values."""
    text = re.sub(r"<(?:\w+\.)+(\w+): '?([^'>]*)'?>", r"\2", str(text))
    text = re.sub(r"\b(?:[a-z_]\w*\.)+([A-Z]\w*)\(", r"\1(", text)
    text = re.sub(r"\bestimator=[^,()]*(?:\([^()]*\))?, ", "", text)  # ART's wrapped model: the same on every row
    if len(text) <= width:
        return text
    cut = text[: width - 3]
    comma = cut.rfind(", ")
    return (cut[:comma] + ", …)") if comma > cut.find("(") else (cut[: cut.find("(") + 1] + "…)")


CROSSCHECK_VIEW = [
    "verdict",
    "pair",
    "model",
    "eps",
    "acc. native",
    "acc. ART",
    "diff",
    "tol.",
    "max |Δx|",
    "labels agree",
    "native",
    "ART",
]
"""Columns of the report's cross-check table: the verdict first, robust accuracy of each side, their difference and
tolerance, the largest pixel difference, the label agreement, the attack calls last and compact."""


def crosscheck_view(table: pd.DataFrame) -> list[dict[str, object]]:
    """``crosscheck.csv`` rows in the report's order (:data:`CROSSCHECK_VIEW`), failures first."""
    rows = []
    for r in table.sort_values("passed", kind="stable").to_dict("records"):
        rows.append(
            {
                "verdict": bool(r["passed"]),
                "pair": str(r["pair"]),
                "model": str(r["model"]),
                "eps": float(r["eps"]),
                "acc. native": float(r["robust_acc_native"]),
                "acc. ART": float(r["robust_acc_art"]),
                "diff": float(r["robust_acc_diff"]),
                "tol.": float(r["tolerance"]),
                "max |Δx|": float(r["max_abs_diff"]),
                "labels agree": float(r["label_agreement"]),
                "native": compact_call(str(r["native"])),
                "ART": compact_call(str(r["art"])),
                "native_full": str(r["native"]),
                "art_full": str(r["art"]),
            }
        )
    return rows
