"""``bench perf``: how close the attacks run to the hardware bound, and how they compare with ART.

Everything is measured in one process, on the same inputs, with the same
batch size and torch thread count: every timed function first runs once on one
batch (warm-up), then the functions run in turn ``repeats`` times (interleaved,
so a burst of load on a shared machine hits them all alike) and each keeps the
median.

Raw bounds (per model, over all ``n`` inputs in batches):

* ``forward``: logits without gradient;
* ``forward_backward``: cross-entropy gradient with respect to the input.

Measured, each against its bound or its peer:

* ``fgsm_sweep``: native FGSM over the epsilon grid, scored as a cell scores it
  (the clean predictions and every eps through one context, which takes eps 0's
  logits from the gradient's forward pass when the model's logits under autograd
  are exact, so E - 1 forward passes); bound ``forward_backward + E * forward`` (P1);
* ``art_fgsm_loop``: ART's ``FastGradientMethod`` run once per eps, each
  result scored with ``predict`` (P1);
* ``pgd``: native PGD-10 at one eps, from the clean input, without early exit
  (every sample, every step: ART's configuration); bound
  ``steps * forward_backward + forward`` (P2); ``pgd_early_stop``: the same
  with the default early exit;
* ``art_pgd``: ART's ``ProjectedGradientDescent`` (``max_iter`` = steps,
  ``num_random_init`` 0, the same ``eps_step``) (P2);
* ``pgd_sweep``: the sweep-aware native PGD over the grid (early exit, a
  sample fooled at a smaller eps is not attacked again), scored per eps, handed
  pooled chunks of up to 8 batches as the runner does (model calls stay at
  ``batch_size``);
  ``pgd_naive``: the peers' loop, every sample, every step, at every eps > 0,
  scored per eps (P3).

Harness overhead (P4): a suite (``suites/attacks_mnist.yaml``; the quickstart with ``--quick``) is
run in this process with a warm checkpoint cache; overhead is its wall time minus the time inside attacks
(``attack_seconds`` of the manifest, which includes scoring each eps, plus the
cross-check's native and ART attack calls, ``native_seconds``/``art_seconds`` of
``crosscheck.csv``) and the clean forward passes; a cell's ``attack_seconds`` include its
minimal-eps bisection, which runs the attack at more radii. MLflow logging is timed apart:
the finished run mirrored into a fresh sqlite store (``mlflow_seconds``, at most 5% of the wall time).
Peak memory is this process' maximum resident set size right after that run (``ru_maxrss``),
before the larger micro benchmarks.

The user's workload (P5, :mod:`bench.perf.workload`): FGSM and PGD-40 over the grid,
the harness's cell code against ART's per-eps loop and a plain PyTorch loop.
Certifiers (``--certify``, :mod:`bench.perf.certify`): ``ibp``, ``crown`` and smoothing against a forward pass and
ART's DeepZ on the zoo's ``lenet_crown``.
Scaling (``--scaling``, :mod:`bench.perf.scaling`): whole harness runs of growing size, each
in a fresh process, time per sample and peak memory, plotted.
Parallel cells (``--parallel``, :mod:`bench.perf.parallel`, P6): shipped suites serially and with
``--n-jobs 2``, wall times and identical results.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import torch

from bench.data import load_dataset
from bench.engine import resolve_device, zoo_model
from bench.memory import peak_rss_bytes
from bench.perf.apgd import APGD_MODEL, measure_apgd
from bench.perf.benches import measure_model, model_benches
from bench.perf.certify import CERTIFY_MODEL, certify_targets, measure_certify
from bench.perf.config import ATTACKS_MNIST, GIB, QUICKSTART, RATIOS, SMALL_MODELS, TARGETS, TIMES, PerfConfig
from bench.perf.harness import measure_harness
from bench.perf.parallel import measure_parallel, parallel_targets
from bench.perf.scaling import QUICK_SIZES, SIZES, measure_scaling, scaling_figure, scaling_targets
from bench.perf.timing import perf_inputs, time_interleaved
from bench.perf.workload import WAYS, WORKLOAD_RATIOS, measure_workload, workload_targets
from bench.rundir import package_versions

# -- the whole measurement -------------------------------------------------------------------------


def run_perf(cfg: PerfConfig, *, echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Every measurement of ``cfg`` in this process; returns the JSON document of ``bench perf``."""
    torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)  # P5's device; P1-P4 are CPU measurements
    started = _dt.datetime.now(_dt.UTC).isoformat()
    harness: dict[str, Any] | None = None
    if cfg.harness_suite is not None:
        if echo:
            echo(f"P4: running {cfg.harness_suite} (harness overhead)")
        harness = measure_harness(cfg)
        torch.set_num_threads(cfg.threads)  # the runner may have set its own
    split = load_dataset(cfg.data, cfg.split)
    x, y = perf_inputs(split, cfg.n)
    models: dict[str, Any] = {}
    workload: dict[str, Any] = {}
    apgd_vs_art: dict[str, Any] = {}  # native APGD vs ART's AutoProjectedGradientDescent (bench/perf/apgd.py)
    targets: list[dict[str, Any]] = []
    for name in cfg.models:
        model = zoo_model(name, cfg.data, seed=cfg.seed, device=torch.device("cpu")).model
        if cfg.micro:
            if echo:
                echo(f"measuring {name} on {cfg.n} inputs ({cfg.repeats} repeats, {cfg.threads} threads)")
            models[name] = measure_model(model, name, x, y, cfg, split)
            targets += models[name]["targets"]
        if cfg.micro and name == APGD_MODEL:
            if echo:
                echo(f"APGD: {name}, native vs ART's AutoProjectedGradientDescent at the same budget")
            apgd_vs_art[name] = measure_apgd(model, x, y, cfg, split)
        if cfg.workload:
            if echo:
                echo(f"P5: {name}, FGSM and PGD-{cfg.workload_steps} over the grid on {cfg.n} inputs, three ways")
            on_device = model if device.type == "cpu" else zoo_model(name, cfg.data, seed=cfg.seed, device=device).model
            workload[name] = measure_workload(on_device, name, x, y, cfg, split, device)
            targets += workload_targets(name, workload[name])
    certify = None
    if cfg.certify:
        if echo:
            echo(f"certifiers: ibp, crown and smoothing on {CERTIFY_MODEL} against a forward pass and ART's DeepZ")
        net = zoo_model(CERTIFY_MODEL, cfg.data, seed=cfg.seed, device=torch.device("cpu")).model
        certify = measure_certify(net, x, y, cfg, split.bounds)
        targets += certify_targets(certify)
    scaling = None
    if cfg.scaling_sizes:
        scaling = measure_scaling(cfg, cfg.scaling_sizes, echo=echo)
        targets += scaling_targets(scaling)
    parallel = None
    if cfg.parallel_suites:
        parallel = measure_parallel(cfg, echo=echo)
        targets += parallel_targets(parallel)
    peak = peak_rss_bytes()
    if harness is not None:
        targets.append(
            {
                "id": "P4",
                "model": "",
                "what": "harness overhead fraction (wall - attacks - clean passes) / wall",
                "target": "<= 0.05",
                "measured": harness["overhead_fraction"],
                "measured_best": harness["overhead_fraction"],
                "passed": harness["overhead_fraction"] <= 0.05,
            }
        )
        targets.append(
            {
                "id": "P4",
                "model": "",
                "what": "MLflow logging of the harness run / its wall time",
                "target": "<= 0.05",
                "measured": harness["mlflow_fraction"],
                "measured_best": harness["mlflow_fraction"],
                "passed": harness["mlflow_fraction"] <= 0.05,
            }
        )
        targets.append(
            {
                "id": "P4",
                "model": "",
                "what": "peak memory of the harness run and its drawing process (GiB)",
                "target": "<= 2",
                "measured": harness["total_peak_rss_bytes"] / GIB,
                "measured_best": harness["total_peak_rss_bytes"] / GIB,
                "passed": harness["total_peak_rss_bytes"] <= 2 * GIB,
            }
        )
    config = asdict(cfg)
    config["harness_suite"] = None if cfg.harness_suite is None else str(cfg.harness_suite)
    config["parallel_suites"] = [str(p) for p in cfg.parallel_suites]
    config["parallel_small"] = None if cfg.parallel_small is None else str(cfg.parallel_small)
    return {
        "format": "bench-perf",
        "version": 1,
        "started": started,
        "config": config,
        "inputs": {"n": len(x), "distinct": min(len(x), len(split)), "shape": list(split.input_shape)},
        "environment": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "device": str(device),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "load_average": list(os.getloadavg()),
            "versions": package_versions(),
        },
        "models": models,
        "workload": workload or None,
        "apgd_vs_art": apgd_vs_art or None,
        "certify": certify,
        "scaling": scaling,
        "parallel": parallel,
        "harness": harness,
        "peak_rss_bytes": peak,
        "targets": targets,
    }


__all__ = [
    "ATTACKS_MNIST",
    "GIB",
    "QUICKSTART",
    "QUICK_SIZES",
    "RATIOS",
    "SIZES",
    "SMALL_MODELS",
    "TARGETS",
    "TIMES",
    "WAYS",
    "WORKLOAD_RATIOS",
    "PerfConfig",
    "measure_harness",
    "measure_model",
    "model_benches",
    "perf_inputs",
    "run_perf",
    "scaling_figure",
    "time_interleaved",
]
