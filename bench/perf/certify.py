"""The certifiers' cost in ``bench perf`` (``--certify``): against a forward pass and against ART's DeepZ.

On the zoo's ``lenet_crown`` (the CROWN-IBP trained small conv net of ``suites/certified_mnist.yaml``), at
Linf eps 0.1, interleaved like every other measurement (:func:`~bench.perf.timing.time_interleaved`):

* ``forward``: logits of ``n`` inputs in batches (the bound of ``ibp``, at most 3x);
* ``ibp``, ``crown`` (default, ``intermediate: auto``) and ``crown_ibp`` (``intermediate: ibp``) on the same
  ``n`` inputs: seconds and certified counts (``crown`` should certify 1,000 digits in seconds);
* ``crown`` against ART's ``PytorchDeepZ`` on the first ``art_n`` inputs, the same network (``Normalize`` folded
  into the first convolution, :class:`~bench.certify.crosscheck.ArtForm`) and the whole ball (neither clips):
  ``deepz / crown`` time (at least 10x) and every sample DeepZ certifies certified by CROWN too;
* ``smoothing`` (n0 = 100, n = 1,000) on ``smoothing_n`` inputs against its bound, ``(n0 + n) * smoothing_n``
  noisy inputs through the model in batches of ``batch_size`` (at most 1.2x).
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from bench.certify import make_certifier
from bench.certify.crosscheck import WIDE, ArtForm, deepz_certified
from bench.perf.config import PerfConfig
from bench.perf.timing import Bench, batches, time_interleaved
from bench.types import Bounds

CERTIFY_MODEL = "lenet_crown"
CERTIFY_EPS = 0.1
TARGETS = {"ibp / forward": 3.0, "deepz / crown": 10.0, "smoothing / bound": 1.2, "crown seconds": 10.0}
"""What the certification issue asks: ``ibp`` at most 3x a forward pass, ``crown`` at least 10x faster than DeepZ
(with at least as many certified), smoothing within 1.2x of its forward passes, 1,000 digits in seconds (10)."""


def certify_benches(model: nn.Module, *, batch_size: int, bounds: Bounds, eps: float) -> dict[str, Bench]:
    """``forward``, ``ibp``, ``crown`` and ``crown_ibp``: each maps ``(x, y)`` to certified flags (forward: None)."""

    @torch.no_grad()
    def forward(x: torch.Tensor, y: torch.Tensor) -> None:
        for xb, _ in batches(x, y, batch_size):
            model(xb)

    def certifier(name: str, **params: Any) -> Bench:
        made = make_certifier(name, **params)

        def run(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            parts = [made.certify(model, xb, yb, eps, bounds=bounds).certified for xb, yb in batches(x, y, batch_size)]
            return torch.cat(parts)

        return run

    return {
        "forward": forward,
        "ibp": certifier("ibp"),
        "crown": certifier("crown"),
        "crown_ibp": certifier("crown", intermediate="ibp"),
    }


def smoothing_benches(model: nn.Module, *, batch_size: int, n0: int, n: int, seed: int) -> dict[str, Bench]:
    """``smoothing`` (its radii) and ``smoothing_bound`` (``(n0 + n)`` noisy copies of each input through the
    model in batches of ``batch_size``, the noise drawn before the clock starts)."""
    smoothing = make_certifier("smoothing", n0=n0, n=n, batch_size=batch_size, seed=seed)
    prepared: dict[int, torch.Tensor] = {}

    def noisy(x: torch.Tensor) -> torch.Tensor:
        if len(x) not in prepared:
            gen = torch.Generator().manual_seed(seed)
            copies = x.repeat_interleave(n0 + n, dim=0)
            prepared[len(x)] = copies + smoothing.sigma * torch.randn(copies.shape, generator=gen)
        return prepared[len(x)]

    def run(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return smoothing.radii(model, x)[1]

    @torch.no_grad()
    def bound(x: torch.Tensor, y: torch.Tensor) -> None:
        inputs = noisy(x)
        for start in range(0, len(inputs), batch_size):
            model(inputs[start : start + batch_size])

    return {"smoothing": run, "smoothing_bound": bound}


def measure_certify(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: PerfConfig, bounds: Bounds) -> dict:
    """Every measurement of the module docstring; ``x`` ``(N, C, H, W)`` the first ``cfg.certify_n`` inputs used."""
    model = model.eval()
    xs, ys = x[: cfg.certify_n], y[: cfg.certify_n]
    benches = certify_benches(model, batch_size=cfg.batch_size, bounds=bounds, eps=CERTIFY_EPS)
    times, samples, last = time_interleaved(benches, xs, ys, repeats=cfg.repeats, warmup=min(8, len(xs)))
    certified = {name: int(flags.sum()) for name, flags in last.items() if flags is not None}

    # ART's DeepZ: one certify call per sample, so one timed run each, on fewer samples
    xa, ya = x[: cfg.certify_art_n], y[: cfg.certify_art_n]
    art_net = ArtForm(model)
    crown = make_certifier("crown")
    tick = time.perf_counter()
    ours = torch.cat(
        [crown.certify(model, xb, yb, CERTIFY_EPS, bounds=WIDE).certified for xb, yb in batches(xa, ya, cfg.batch_size)]
    )
    crown_art_seconds = time.perf_counter() - tick
    tick = time.perf_counter()
    theirs = deepz_certified(art_net, xa, ya, CERTIFY_EPS, int(model(xa[:1]).shape[1]))
    deepz_seconds = time.perf_counter() - tick

    smooth = smoothing_benches(model, batch_size=cfg.batch_size, n0=100, n=1_000, seed=cfg.seed)
    xsm, ysm = x[: cfg.smoothing_n], y[: cfg.smoothing_n]
    smooth_times, smooth_samples, _ = time_interleaved(smooth, xsm, ysm, repeats=cfg.repeats, warmup=1)
    ratios = {
        "ibp / forward": times["ibp"] / times["forward"],
        "crown / forward": times["crown"] / times["forward"],
        "deepz / crown": deepz_seconds / crown_art_seconds,
        "smoothing / bound": smooth_times["smoothing"] / smooth_times["smoothing_bound"],
    }
    return {
        "model": CERTIFY_MODEL,
        "eps": CERTIFY_EPS,
        "n": len(xs),
        "times": times,
        "samples": samples,
        "certified": certified,
        "art": {
            "n": len(xa),
            "crown_seconds": crown_art_seconds,
            "deepz_seconds": deepz_seconds,
            "crown_certified": int(ours.sum()),
            "deepz_certified": int(theirs.sum()),
            "deepz_only": int((theirs & ~ours).sum()),
        },
        "smoothing": {"n": len(xsm), "n0": 100, "draws": 1_000, "times": smooth_times, "samples": smooth_samples},
        "ratios": ratios,
    }


def certify_targets(result: dict) -> list[dict[str, Any]]:
    """The target rows of the certification measurements (``bench perf``'s targets table)."""
    art, ratios, model = result["art"], result["ratios"], result["model"]

    def row(what: str, target: str, value: float, passed: bool) -> dict[str, Any]:
        return {
            "id": "C",
            "model": model,
            "what": what,
            "target": target,
            "measured": value,
            "measured_best": value,
            "passed": passed,
        }

    return [
        row(
            f"crown seconds for {result['n']} inputs",
            f"<= {TARGETS['crown seconds']:g}",
            result["times"]["crown"],
            result["times"]["crown"] <= TARGETS["crown seconds"],
        ),
        row(
            "ibp / forward",
            f"<= {TARGETS['ibp / forward']:g}",
            ratios["ibp / forward"],
            ratios["ibp / forward"] <= TARGETS["ibp / forward"],
        ),
        row(
            f"ART DeepZ / crown time ({art['n']} inputs)",
            f">= {TARGETS['deepz / crown']:g}",
            ratios["deepz / crown"],
            ratios["deepz / crown"] >= TARGETS["deepz / crown"],
        ),
        row("samples DeepZ certifies and crown does not", "0", art["deepz_only"], art["deepz_only"] == 0),
        row(
            "smoothing / (n0 + n) forward passes",
            f"<= {TARGETS['smoothing / bound']:g}",
            ratios["smoothing / bound"],
            ratios["smoothing / bound"] <= TARGETS["smoothing / bound"],
        ),
    ]
