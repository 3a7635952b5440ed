"""The bracket phase: certification cells beside the attack cells, the soundness check, the certified tables.

After the attacks, every (model, certifier) cell of the suite's ``certify:`` runs (:mod:`bench.engine.certify_cell`).
Then each bound certifier's certificates are held against the attacks of the same run: a sample a bound
certifier proved robust at eps that an attack of the same norm broke at a radius within eps is a certifier bug,
and the run fails naming the sample (the cells stay on disk). Finally each certified row gets its upper side
(the attacks' worst case over the same samples), and each attack row its lower side (the best bound
certificate at its eps and norm): ``certified.csv`` and the optional columns of ``results.csv``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import torch

from bench import progress
from bench.certified import CERTIFIED_COLUMNS, CERTIFIED_SAMPLE_COLUMNS, certified_paths
from bench.certify import CertifyError, make_certifier
from bench.data import DataSplit
from bench.engine.cell import CellOutcome
from bench.engine.certify_cell import CertifyTask, load_certify_cell, run_certify_cell
from bench.engine.models import ModelRef
from bench.engine.parallel import WorkerPlan, run_tasks
from bench.rundir import RunDir, RunError, atomic_write_parquet, atomic_write_text
from bench.suite import Suite, expand_certify

NORM_TOLERANCE = 1e-5
"""An attack's example counts against a certificate at eps when its perturbation norm is at most
``eps * (1 + NORM_TOLERANCE) + 1e-7`` (float rounding of the projection), i.e. when it lies in the certified ball."""


def check_certifiable(suite: Suite, refs: dict[str, ModelRef], device: torch.device) -> None:
    """Every (model, certifier) pair of the suite can be certified (:meth:`Certifier.check_model`), checked before
    any cell runs: a layer a certifier cannot bound is a :class:`RunError` naming the model, the layer and the
    certifier, not a failure after hours of attacks."""
    problems = []
    for cell in expand_certify(suite):
        try:
            make_certifier(cell.certifier.name, **cell.certifier.params).check_model(refs[cell.model.id].load(device))
        except CertifyError as exc:
            problems.append(f"certify: model {cell.model.id!r}: {exc}")
    if problems:
        raise RunError("\n".join(problems))


def run_certify_cells(
    run: RunDir,
    suite: Suite,
    refs: dict[str, ModelRef],
    data: DataSplit,
    device: torch.device,
    *,
    plan: WorkerPlan,
    backend: str,
    scheduler: str | None,
    echo: Callable[[str], None] | None,
    trust: bool = False,
) -> tuple[list[CellOutcome], list[str]]:
    """Every certification cell not yet finished, on the attack cells' backend and worker plan
    (:func:`~bench.engine.parallel.run_tasks`), with the finished ones read back and checked; outcomes in suite
    order, and the edits ``trust`` (``--trust-edited``) accepted."""
    cells = expand_certify(suite)
    finished: dict[str, CellOutcome] = {}
    edited: list[str] = []
    for cell in cells:
        if run.cell_done(cell.id):
            finished[cell.id], note = load_certify_cell(run, cell.id, trust_edited=trust)
            if note:
                edited.append(note)
    common = (data, suite.name, suite.seed, str(device), suite.batch_size, str(run.root), plan.threads)
    pending = [CertifyTask(cell, refs[cell.model.id], *common) for cell in cells if cell.id not in finished]
    if echo and pending:
        echo(f"certifying: {len(pending)} cell(s) ({', '.join(c.id for c in suite.certify)} on every model)")
    samples = {t.cell.id: min(t.cell.certifier.n or len(data), len(data)) for t in pending}
    progress.cells(len(pending), samples, unit="certifiers")
    jobs = min(plan.n_jobs, max(1, len(pending)))
    outcomes = {**finished, **run_tasks(run_certify_cell, pending, jobs=jobs, backend=backend, scheduler=scheduler)}
    return [outcomes[c.id] for c in cells], edited


def soundness_problems(certified: pd.DataFrame, certified_samples: pd.DataFrame, samples: pd.DataFrame) -> list[str]:
    """One line per (model, certifier) whose certificate an attack contradicts, naming the first such sample.

    Bound certifiers only: smoothing certifies the smoothed classifier, which an attack on the base model does not
    contradict. A contradiction: the sample is certified at eps, and an attack of the same norm misclassified it
    at a grid eps' <= eps with a perturbation inside the eps ball.
    """
    kinds = certified.drop_duplicates(["model", "certifier"]).set_index(["model", "certifier"])
    proven = certified_samples[certified_samples["certified"]]
    if proven.empty or samples.empty:
        return []
    problems = []
    for (model, certifier), group in proven.groupby(["model", "certifier"], sort=False):
        if kinds.loc[(model, certifier), "kind"] != "bound":
            continue
        norm = kinds.loc[(model, certifier), "norm"]
        broken = samples[
            (samples["model"] == model)
            & (samples["attack_norm"] == norm)
            & ~samples["correct_pointwise"]
            & (samples["clean_pred"] == samples["label"])
        ]
        if norm not in ("linf", "l2") or broken.empty:
            continue
        broken = broken.assign(size=broken[norm])
        pairs = group.merge(broken, on="index", suffixes=("", "_attack"))
        hit = pairs[
            (pairs["eps_attack"] <= pairs["eps"]) & (pairs["size"] <= pairs["eps"] * (1 + NORM_TOLERANCE) + 1e-7)
        ]
        if not hit.empty:
            first = hit.sort_values(["eps", "index"]).iloc[0]
            problems.append(
                f"soundness check failed: certifier {certifier!r} proved sample {int(first['index'])} of model "
                f"{model!r} robust at {norm} eps {first['eps']:g}, but attack {first['attack']!r} misclassified it "
                f"at eps {first['eps_attack']:g} ({norm} perturbation {first['size']:.6g}): a certifier bug "
                f"({len(hit)} contradiction(s) in all; the certificates are kept in cells/)"
            )
    return problems


def attacked_side(certified: pd.DataFrame, certified_samples: pd.DataFrame, samples: pd.DataFrame) -> pd.DataFrame:
    """``certified`` with ``attacked_accuracy`` (the attacks' per-sample worst case over the certifier's samples,
    at its eps and norm, from attacks that ran on all of them), ``attacked_by`` and ``gap`` filled in."""
    out = certified.copy()
    for i, row in out.iterrows():
        indices = certified_samples.loc[
            (certified_samples["model"] == row["model"])
            & (certified_samples["certifier"] == row["certifier"])
            & (certified_samples["eps"] == row["eps"]),
            "index",
        ].to_numpy()
        at = samples[(samples["model"] == row["model"]) & (samples["eps"] == row["eps"])]
        at = at[at["attack"].isin(_attacks_of_norm(at, row["norm"]))]
        robust = np.ones(len(indices), dtype=bool)
        used = []
        for attack, flags in at.groupby("attack", sort=False):
            by_index = flags.set_index("index")["correct"]
            if not np.isin(indices, by_index.index).all():
                continue  # this attack ran on fewer samples than the certifier
            robust &= by_index.reindex(indices).to_numpy(dtype=bool)
            used.append(str(attack))
        if used and len(indices):
            out.at[i, "attacked_accuracy"] = float(robust.mean())
            out.at[i, "attacked_by"] = ", ".join(used)
            out.at[i, "gap"] = float(robust.mean()) - float(row["certified_accuracy"])
    return out


def _attacks_of_norm(samples: pd.DataFrame, norm: str) -> list[str]:
    # the attack's norm is a result column, not a sample column: the samples' ``attack_norm`` (added by the caller)
    return sorted(samples.loc[samples["attack_norm"] == norm, "attack"].unique())


def lower_side(results: pd.DataFrame, certified: pd.DataFrame) -> pd.DataFrame:
    """``results`` with the best bound certificate at each row's model, eps and norm (``certified_*`` columns)."""
    bound = certified[certified["kind"] == "bound"]
    out = results.copy()
    out["certified_accuracy"] = np.nan
    out["certified_ci_low"] = np.nan
    out["certified_ci_high"] = np.nan
    out["certified_by"] = ""
    if bound.empty:
        return out
    best = bound.sort_values("certified_accuracy", ascending=False).drop_duplicates(["model", "norm", "eps"])
    merged = out[["model", "norm", "eps"]].merge(best, on=["model", "norm", "eps"], how="left")
    out["certified_accuracy"] = merged["certified_accuracy"].to_numpy()
    out["certified_ci_low"] = merged["certified_ci_low"].to_numpy()
    out["certified_ci_high"] = merged["certified_ci_high"].to_numpy()
    out["certified_by"] = merged["certifier"].fillna("").to_numpy()
    return out


def bracket(
    results: pd.DataFrame, samples: pd.DataFrame, outcomes: list[CellOutcome]
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """``(results with their lower side, certified rows with their upper side, certified samples)``; raises
    :class:`RunError` when an attack contradicts a bound certificate (the soundness check)."""
    certified = pd.concat([o.rows for o in outcomes], ignore_index=True)[CERTIFIED_COLUMNS]
    certified_samples = pd.concat([o.samples for o in outcomes], ignore_index=True)[CERTIFIED_SAMPLE_COLUMNS]
    norms = results.drop_duplicates(["model", "attack"])[["model", "attack", "norm"]]
    flags = samples.merge(norms.rename(columns={"norm": "attack_norm"}), on=["model", "attack"], how="left")
    problems = soundness_problems(certified, certified_samples, flags)
    if problems:
        raise RunError("\n".join(problems))
    return lower_side(results, certified), attacked_side(certified, certified_samples, flags), certified_samples


def write_certified(run: RunDir, certified: pd.DataFrame, certified_samples: pd.DataFrame) -> None:
    """``certified.csv``, ``certified.parquet`` and ``certified_samples.parquet``."""
    csv, parquet, per_sample = certified_paths(run)
    atomic_write_text(csv, certified.to_csv(index=False))
    atomic_write_parquet(certified, parquet)
    atomic_write_parquet(certified_samples, per_sample)
