"""What ``bench perf`` measures (:class:`PerfConfig`) and the targets it checks (P1-P4)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

QUICKSTART = Path(__file__).resolve().parents[2] / "suites" / "quickstart.yaml"
ATTACKS_MNIST = QUICKSTART.with_name("attacks_mnist.yaml")
SMALL_MODELS = QUICKSTART.with_name("small_models.yaml")
GIB = 1024**3

# (target id, what, bound, direction, models it applies to (None: all))
# The bounds as the performance round-two issue restates them. The ratios against ART's single
# attacks (art_fgsm_loop / fgsm_sweep, art_pgd / pgd) and P3 are still measured and printed; their
# targets were set against a slower ART and are replaced by P5's (the whole sweep against ART's loop).
TARGETS: tuple[tuple[str, str, float, str, tuple[str, ...] | None], ...] = (
    ("P1", "fgsm_sweep / (forward_backward + E forwards)", 1.08, "<=", None),
    ("P2", "pgd / (steps forward_backward + 1 forward)", 1.05, "<=", ("lenet",)),
    ("P2", "pgd / (steps forward_backward + 1 forward)", 1.10, "<=", ("mlp",)),
)

TIMES = (
    "forward",
    "forward_backward",
    "fgsm_sweep",
    "art_fgsm_loop",
    "pgd",
    "pgd_early_stop",
    "art_pgd",
    "pgd_sweep",
    "pgd_naive",
)
RATIOS = (
    "fgsm_sweep / (forward_backward + E forwards)",
    # the sweep scores eps 0 with its gradient pass's logits: against the passes it does make
    "fgsm_sweep / (forward_backward + (E - 1) forwards)",
    "art_fgsm_loop / fgsm_sweep",
    "pgd / (steps forward_backward + 1 forward)",
    "art_pgd / pgd",
    "art_pgd / pgd_early_stop",
    "pgd_sweep / pgd_naive",
)


@dataclass(frozen=True, kw_only=True)
class PerfConfig:
    """What ``bench perf`` measures.

    Args:
        models: zoo models, trained on ``data`` (from the checkpoint cache, or trained first, untimed).
        data: data set name; ``split`` its split. Inputs are the first ``n`` samples, the split
            repeated cyclically when it has fewer (timing does not depend on which digits they are).
        n: number of inputs (default 10,000).
        batch_size: batch size of every native and ART call (default 500).
        repeats: timed repetitions per measurement; the median is kept (default 3).
        threads: torch threads (default: all cores).
        epsilons: the sweep grid in pixel units of [0, 1] (default 0, 0.05, ..., 0.3: E = 7).
        pgd_eps: the eps of the single-eps PGD comparison (default 0.1).
        pgd_steps: PGD iterations (default 10).
        rel_step_size: PGD step as a fraction of eps (default 0.25 = Madry's 2.5 eps / steps for 10 steps).
        harness_suite: suite run for P4 (default ``suites/attacks_mnist.yaml``; the CLI's ``--quick``
            uses the quickstart); ``None`` skips P4.
        harness_override: replace the harness suite's data set (``data``, ``harness_n`` samples) and
            models (``models``) and switch off its cross-check (the reduced CI mode).
        harness_n: samples of the overridden harness suite.
        seed: seed of the models and data split.
        device: where P5 runs (cpu, cuda, cuda:N, auto); P1-P4 are CPU measurements.
        micro: measure P1-P3 (the bounds, single attacks against ART).
        workload: measure P5, the user's workload (FGSM and PGD over the grid, three ways).
        workload_steps: PGD steps of the workload (default 40); ``workload_rel_step`` its step as a
            fraction of eps (default 0.0625 = Madry's 2.5 eps / steps for 40 steps).
        workload_repeats: timed repetitions of the workload (default 1: it is the longest measurement).
        parallel_suites: suites timed serially and with ``parallel_n_jobs`` workers (``--parallel``;
            empty: skipped), :mod:`bench.perf.parallel`.
        parallel_n_jobs: workers of the parallel runs (2).
        parallel_small: the suite of small models held to the 1.3x speed-up target (others: never slower).
        certify: measure the certifiers (``--certify``; :mod:`bench.perf.certify`): ``certify_n`` inputs
            (1,000), ``certify_art_n`` of them against ART's DeepZ (200), ``smoothing_n`` for smoothing (20).
        scaling_sizes: sample counts of the scaling run (``--scaling``; empty: skipped), each a whole
            harness run of ``scaling_model`` on ``scaling_data``/``scaling_split`` in a fresh process.
    """

    models: tuple[str, ...] = ("lenet", "mlp")
    data: str = "mnist5k"
    split: str = "test"
    n: int = 10_000
    batch_size: int = 500
    repeats: int = 3
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    epsilons: tuple[float, ...] = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3)
    pgd_eps: float = 0.1
    pgd_steps: int = 10
    rel_step_size: float = 0.25
    harness_suite: Path | None = ATTACKS_MNIST
    harness_override: bool = False
    harness_n: int = 64
    seed: int = 0
    device: str = "cpu"
    micro: bool = True
    workload: bool = True
    workload_steps: int = 40
    workload_rel_step: float = 0.0625
    workload_repeats: int = 1
    certify: bool = False
    certify_n: int = 1_000
    certify_art_n: int = 200
    smoothing_n: int = 20
    scaling_sizes: tuple[int, ...] = ()
    parallel_suites: tuple[Path, ...] = ()
    parallel_n_jobs: int = 2
    parallel_small: Path | None = SMALL_MODELS
    scaling_data: str = "fashion-mnist"
    scaling_split: str = "train"
    scaling_model: str = "mlp"

    def __post_init__(self) -> None:
        for name in (
            "n",
            "batch_size",
            "repeats",
            "threads",
            "pgd_steps",
            "harness_n",
            "workload_steps",
            "workload_repeats",
            "parallel_n_jobs",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"perf: {name} must be >= 1, got {getattr(self, name)}")
        if not self.models:
            raise ValueError("perf: give at least one model")
        if self.pgd_eps <= 0 or self.rel_step_size <= 0 or self.workload_rel_step <= 0:
            raise ValueError("perf: pgd_eps, rel_step_size and workload_rel_step must be > 0")
        if any(n < 1 for n in self.scaling_sizes) or list(self.scaling_sizes) != sorted(set(self.scaling_sizes)):
            raise ValueError(f"perf: scaling sizes must be ascending and >= 1, got {list(self.scaling_sizes)}")
