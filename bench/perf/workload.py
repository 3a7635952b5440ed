"""P5 of ``bench perf``: the user's workload, FGSM and PGD-40 over the eps grid, done three ways on the same inputs.

* ``harness``: the engine's own cell code (:func:`bench.engine.evaluate_cell`: batches, pooled
  chunks, the sweep-aware attacks with early exit, scoring, per-sample norms), robust
  accuracy as the harness reports it (cumulative over eps, clean-correct samples only);
* ``art_loop``: what an ART user writes: ``FastGradientMethod`` and ``ProjectedGradientDescent``
  (``num_random_init=1``, the same step) constructed and run once per eps, each result scored
  with ``predict``;
* ``plain_loop``: the fastest loop a user writes by hand in PyTorch: per eps and batch, one
  gradient per step for every sample (random start, sign step, clamp to the ball and the box).

Every way skips the gradients at eps 0 (it only scores the clean input), so no loop pays for a
step that cannot move a sample. The robust-accuracy comparison is a one-sided exact McNemar
test per attack, eps and loop ("the harness keeps more samples robust than the loop"), with
Holm's adjustment over all the comparisons of a model: the harness is *not weaker* when no
adjusted p-value is below 0.05.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench import stats
from bench.attacks import make_attack
from bench.attacks.art import art_classifier
from bench.data import DataSplit
from bench.engine import evaluate_cell, gradient_logits_exact
from bench.perf.config import PerfConfig
from bench.perf.timing import Bench, batches, time_interleaved
from bench.types import Bounds

WAYS = ("harness", "art_loop", "plain_loop")
ATTACKS = ("fgsm", "pgd")
WORKLOAD_RATIOS = ("art_loop / harness", "plain_loop / harness")
ALPHA = 0.05


def pgd_params(cfg: PerfConfig) -> dict[str, Any]:
    """The workload's PGD: ``workload_steps`` steps of ``workload_rel_step`` eps from a random start, linf."""
    return {"norm": "linf", "steps": cfg.workload_steps, "rel_step_size": cfg.workload_rel_step, "random_start": True}


# -- the three ways ------------------------------------------------------------------------------


def workload_benches(
    model: nn.Module, cfg: PerfConfig, split: DataSplit, device: torch.device = torch.device("cpu")
) -> dict[str, Bench]:
    """The three timed ways; each maps ``(x, y)`` to ``{"fgsm": robust (E, N), "pgd": ..., "seconds": {...}}``.

    ``model`` is on ``device``; inputs come in on the CPU and every way moves its batches there
    (the harness and ART do it themselves), so the CPU-to-device copies are timed on every side.
    """
    from art.attacks.evasion import FastGradientMethod, ProjectedGradientDescent  # ART: heavy optional library

    b, eps_list, bounds = cfg.batch_size, list(cfg.epsilons), split.bounds
    fgsm = make_attack("fgsm", norm="linf")
    pgd = make_attack("pgd", **pgd_params(cfg))
    classifier = art_classifier(
        model, input_shape=split.input_shape, nb_classes=split.num_classes, bounds=bounds, device=device
    )

    # The runner's model check, made once: whether a gradient's logits may stand for the clean pass.
    exact = gradient_logits_exact(model, split.x[:b].to(device))

    def harness(x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        data = dataclasses.replace(split, x=x, y=y, indices=torch.arange(len(y)))
        out: dict[str, Any] = {"seconds": {}, "grad_evals": {}}
        for name, attack in (("fgsm", fgsm), ("pgd", pgd)):
            tick = time.perf_counter()
            arrays, _ = evaluate_cell(
                model, attack, data, tuple(eps_list), seed=cfg.seed, device=device, batch_size=b, gradient_logits=exact
            )
            out["seconds"][name] = time.perf_counter() - tick
            pointwise = (arrays["adv_pred"] == y.numpy()[None, :]) & (arrays["clean_pred"] == y.numpy())[None, :]
            out[name] = stats.cumulative_robust(pointwise)
            out["grad_evals"][name] = int(arrays["grad_evals"].sum())
        return out

    def art_loop(x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        x_np, y_np = x.numpy(), y.numpy()
        onehot = np.eye(split.num_classes, dtype=np.float32)[y_np]
        out: dict[str, Any] = {"seconds": {}}
        for name in ATTACKS:
            tick = time.perf_counter()
            rows = []
            for eps in eps_list:
                if eps == 0:
                    adv = x_np
                elif name == "fgsm":
                    adv = FastGradientMethod(classifier, eps=eps, batch_size=b).generate(x_np, y=onehot)
                else:
                    adv = ProjectedGradientDescent(
                        classifier,
                        norm=np.inf,
                        eps=eps,
                        eps_step=cfg.workload_rel_step * eps,
                        max_iter=cfg.workload_steps,
                        num_random_init=1,
                        batch_size=b,
                        verbose=False,
                    ).generate(x_np, y=onehot)
                rows.append(classifier.predict(adv, batch_size=b).argmax(1) == y_np)
            out[name] = np.stack(rows)
            out["seconds"][name] = time.perf_counter() - tick
        return out

    def plain_loop(x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        out: dict[str, Any] = {"seconds": {}, "grad_evals": {}}
        for name in ATTACKS:
            tick = time.perf_counter()
            steps = 1 if name == "fgsm" else cfg.workload_steps
            robust = np.zeros((len(eps_list), len(x)), dtype=bool)
            gen = torch.Generator().manual_seed(cfg.seed)
            for j, eps in enumerate(eps_list):
                for i, (xb, yb) in enumerate(batches(x, y, b)):
                    xb, yb = xb.to(device), yb.to(device)
                    if eps == 0:
                        adv = xb
                    elif name == "fgsm":
                        adv = plain_fgsm(model, xb, yb, eps, bounds)
                    else:
                        adv = plain_pgd(model, xb, yb, eps, cfg.workload_rel_step * eps, steps, bounds, gen)
                    with torch.no_grad():
                        robust[j, i * b : i * b + len(xb)] = (model(adv).argmax(1) == yb).cpu().numpy()
            out[name] = robust
            out["seconds"][name] = time.perf_counter() - tick
            out["grad_evals"][name] = steps * len(x) * sum(e > 0 for e in eps_list)
        return out

    return {"harness": harness, "art_loop": art_loop, "plain_loop": plain_loop}


def plain_fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, bounds: Bounds) -> torch.Tensor:
    """FGSM as a user writes it: one gradient, one signed step, clipped to the box."""
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"), x)
    return (x.detach() + eps * grad.sign()).clamp(bounds.low, bounds.high)


def plain_pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    step: float,
    steps: int,
    bounds: Bounds,
    gen: torch.Generator,
) -> torch.Tensor:
    """Madry's PGD as a user writes it: random start in the ball, ``steps`` signed steps, clamp to ball and box."""
    start = ((torch.rand(x.shape, generator=gen) * 2 - 1) * eps).to(x.device)  # drawn on the CPU, as the harness
    adv = (x + start).clamp(bounds.low, bounds.high)
    for _ in range(steps):
        adv = adv.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(adv), y, reduction="sum"), adv)
        adv = adv.detach() + step * grad.sign()
        adv = torch.min(torch.max(adv, x - eps), x + eps).clamp(bounds.low, bounds.high)
    return adv.detach()


# -- the measurement -------------------------------------------------------------------------------


def measure_workload(
    model: nn.Module,
    name: str,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: PerfConfig,
    split: DataSplit,
    device: torch.device = torch.device("cpu"),
) -> dict[str, Any]:
    """Times, ratios, robust accuracies and the McNemar comparison of the three ways on one model (on ``device``)."""
    benches = workload_benches(model, cfg, split, device)
    times, samples, last = time_interleaved(
        benches, x, y, repeats=cfg.workload_repeats, warmup=min(cfg.batch_size, len(x))
    )
    ratios = {f"{way} / harness": times[way] / times["harness"] for way in ("art_loop", "plain_loop")}
    best = {k: min(v) for k, v in samples.items()}
    best_ratios = {f"{way} / harness": best[way] / best["harness"] for way in ("art_loop", "plain_loop")}
    robust = {way: {a: [float(v) for v in last[way][a].mean(axis=1)] for a in ATTACKS} for way in WAYS}
    comparisons = compare(last, list(cfg.epsilons))
    return {
        "n": len(x),
        "device": str(device),
        "epsilons": list(cfg.epsilons),
        "attacks": {"fgsm": {"norm": "linf"}, "pgd": pgd_params(cfg)},
        "times": times,
        "samples": samples,
        "best_times": best,
        "attack_seconds": {way: last[way]["seconds"] for way in WAYS},
        "ratios": ratios,
        "best_ratios": best_ratios,
        "grad_evals": {way: last[way]["grad_evals"] for way in ("harness", "plain_loop")},
        "robust_accuracy": robust,
        "mcnemar": comparisons,
        "harness_not_weaker": all(c["p_holm"] >= ALPHA for c in comparisons),
    }


def compare(last: dict[str, dict[str, Any]], epsilons: list[float]) -> list[dict[str, Any]]:
    """One-sided exact McNemar per attack, eps and loop: is the harness's robust accuracy significantly higher?"""
    rows = []
    for loop in ("art_loop", "plain_loop"):
        for attack in ATTACKS:
            ours, theirs = last["harness"][attack], last[loop][attack]
            for j, eps in enumerate(epsilons):
                only_ours = int((ours[j] & ~theirs[j]).sum())
                only_theirs = int((~ours[j] & theirs[j]).sum())
                p = stats.mcnemar_p(only_ours, only_theirs, mid_p=False)
                rows.append(
                    {"versus": loop, "attack": attack, "eps": float(eps)}
                    | {"harness_only_robust": only_ours, "loop_only_robust": only_theirs, "p_value": p}
                )
    for row, adjusted in zip(rows, stats.holm([r["p_value"] for r in rows]), strict=True):
        row["p_holm"] = float(adjusted)
    return rows


def workload_targets(name: str, workload: dict[str, Any]) -> list[dict[str, Any]]:
    """P5's verdicts: >= 3x ART's loop and >= 2x the plain loop, with the harness not weaker than either."""
    out = []
    for what, bound in (("art_loop / harness", 3.0), ("plain_loop / harness", 2.0)):
        value = workload["ratios"][what]
        out.append(
            {"id": "P5", "model": name, "what": what, "target": f">= {bound:g}", "measured": value}
            | {"measured_best": workload["best_ratios"][what]}
            | {"passed": bool(value >= bound and workload["harness_not_weaker"])}
        )
    return out
