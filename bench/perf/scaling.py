"""``bench perf --scaling``: time per sample and peak memory of a whole harness run as the number of inputs grows.

Each size runs in a fresh process (``multiprocessing`` spawn), so its peak resident set
size (``ru_maxrss``) is its own and not the largest run's so far: the suite is the
workload's FGSM and PGD over the eps grid on the first ``n`` samples of a split, one zoo
model, no cross-check and no MLflow, written to a temporary run directory (results,
per-sample flags and example grids, as ``bench run`` writes them). The model is trained
(or loaded from the checkpoint cache) by the parent first, untimed.
"""

from __future__ import annotations

import multiprocessing
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench.engine import run_suite, zoo_model
from bench.memory import peak_rss_bytes
from bench.perf.config import GIB, PerfConfig
from bench.suite import validate

SIZES = (1_000, 3_000, 10_000, 30_000, 60_000)
QUICK_SIZES = (16, 48)
SCALING_STEPS = 10  # PGD-10 keeps the 60,000-sample run to minutes on two cores


def scaling_suite(cfg: PerfConfig, n: int) -> dict[str, Any]:
    """The suite mapping timed at size ``n``."""
    return {
        "name": f"perf_scaling_{n}",
        "seed": cfg.seed,
        "device": "cpu",
        "dataset": {"name": cfg.scaling_data, "split": cfg.scaling_split, "n": n},
        "models": [cfg.scaling_model],
        "attacks": [
            {"name": "fgsm", "params": {"norm": "linf"}},
            {
                "name": "pgd",
                "params": {"norm": "linf", "steps": SCALING_STEPS, "rel_step_size": 0.25, "random_start": True},
            },
        ],
        "epsilons": list(cfg.epsilons),
        "batch_size": cfg.batch_size,
        "crosscheck": False,
        "tracking": {"examples": 8},
    }


def _one_size(cfg: PerfConfig, n: int) -> dict[str, Any]:
    """Run the suite of size ``n`` in this (fresh) process; wall time and peak memory."""
    torch.set_num_threads(cfg.threads)
    suite = validate(scaling_suite(cfg, n), source=f"bench perf --scaling (n={n})")
    before = peak_rss_bytes()
    with tempfile.TemporaryDirectory(prefix="bench-perf-scaling-") as tmp:
        start = time.perf_counter()
        outcome = run_suite(suite, out=Path(tmp) / "run", track=False, echo=None, n_jobs=1)
        wall = time.perf_counter() - start
    manifest = outcome.manifest
    return {
        "n": n,
        "wall_seconds": wall,
        "attack_seconds": float(manifest["attack_seconds"]),
        "seconds_per_sample": wall / n,
        "attack_seconds_per_sample": float(manifest["attack_seconds"]) / n,
        "peak_rss_bytes": peak_rss_bytes(),
        "rss_before_run_bytes": before,
    }


def measure_scaling(
    cfg: PerfConfig, sizes: tuple[int, ...], *, echo: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Every size of ``sizes``, each in its own spawned process; the JSON section ``scaling``."""
    zoo_model(cfg.scaling_model, cfg.scaling_data, seed=cfg.seed, device=torch.device("cpu"))  # train now, untimed
    context = multiprocessing.get_context("spawn")
    points = []
    for n in sizes:
        if echo:
            echo(f"scaling: {cfg.scaling_model} on {n} {cfg.scaling_data} samples (fresh process)")
        with context.Pool(1) as pool:
            points.append(point := pool.apply(_one_size, (cfg, n)))
        if echo:  # each point as it comes: a long run that is stopped still leaves its numbers in the log
            echo(
                f"  n={n}: {point['wall_seconds']:.1f} s, {1e3 * point['seconds_per_sample']:.3f} ms per sample, "
                f"peak {point['peak_rss_bytes'] / GIB:.2f} GiB"
            )
    per_sample = [p["seconds_per_sample"] for p in points]
    largest = points[-1]
    return {
        "data": cfg.scaling_data,
        "split": cfg.scaling_split,
        "model": cfg.scaling_model,
        "attacks": scaling_suite(cfg, sizes[0])["attacks"],
        "points": points,
        # flat: the largest run's time per sample relative to the smallest's
        "per_sample_ratio_largest_to_smallest": per_sample[-1] / per_sample[0],
        "per_sample_ratio_max_to_min": max(per_sample) / min(per_sample),
        # inside attacks only: without the fixed costs of a run (imports, report), which small n cannot amortize
        "attack_per_sample_ratio_largest_to_smallest": points[-1]["attack_seconds_per_sample"]
        / points[0]["attack_seconds_per_sample"],
        "peak_rss_largest_gib": largest["peak_rss_bytes"] / GIB,
        "figure": None,
    }


def scaling_targets(scaling: dict[str, Any]) -> list[dict[str, Any]]:
    """Time per sample flat (the largest n within 1.2x of the smallest) and peak memory <= 2 GiB at the largest."""
    flat = scaling["per_sample_ratio_largest_to_smallest"]
    peak = scaling["peak_rss_largest_gib"]
    largest = scaling["points"][-1]["n"]
    return [
        {"id": "S", "model": scaling["model"], "what": f"seconds per sample at n {largest} over the smallest n"}
        | {"target": "<= 1.2", "measured": flat, "measured_best": flat, "passed": flat <= 1.2},
        {"id": "S", "model": scaling["model"], "what": f"peak memory at n {largest} in GiB"}
        | {"target": "<= 2", "measured": peak, "measured_best": peak, "passed": peak <= 2},
    ]


def scaling_figure(scaling: dict[str, Any], path: Path) -> Path:
    """Two panels (seconds per sample, peak memory) against n, written as a PNG at ``path``."""
    import matplotlib  # heavy optional library: only for the figure

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy optional library: only for the figure

    ns = [p["n"] for p in scaling["points"]]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4), constrained_layout=True)
    left.plot(ns, [1e3 * p["seconds_per_sample"] for p in scaling["points"]], "o-", label="whole run")
    left.plot(ns, [1e3 * p["attack_seconds_per_sample"] for p in scaling["points"]], "s--", label="inside attacks")
    left.set(xscale="log", xlabel="samples n", ylabel="ms per sample", ylim=(0, None))
    left.legend()
    right.plot(ns, [p["peak_rss_bytes"] / GIB for p in scaling["points"]], "o-", color="C2")
    right.axhline(2, color="C3", linestyle=":", label="target 2 GiB")
    right.set(xscale="log", xlabel="samples n", ylabel="peak RSS (GiB)", ylim=(0, None))
    right.legend()
    fig.suptitle(f"bench perf --scaling: {scaling['model']} on {scaling['data']} ({scaling['split']}), FGSM + PGD-10")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
