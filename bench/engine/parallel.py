"""Where cells run: joblib's backends (loky processes, threads, a dask.distributed cluster) and torch threads."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import torch
from joblib import Parallel, cpu_count, delayed, effective_n_jobs, parallel_config
from torch import nn

from bench import limits, progress
from bench.rundir import RunError

T = TypeVar("T")
Outcome = TypeVar("Outcome")

BACKENDS = ("loky", "threading", "dask")


def check_backend(backend: str, scheduler: str | None) -> None:
    """Refuse an unknown backend, dask without a scheduler, or a scheduler without dask."""
    if backend not in BACKENDS:
        raise RunError(f"backend: {backend!r} is not allowed (allowed: {', '.join(BACKENDS)})")
    if backend == "dask" and not scheduler:
        raise RunError("backend: dask needs a scheduler address (--scheduler tcp://HOST:8786 or 'scheduler:')")
    if backend != "dask" and scheduler:
        raise RunError(f"scheduler: {scheduler!r} is only used with backend: dask (got backend {backend!r})")


@contextlib.contextmanager
def parallel_backend(backend: str, scheduler: str | None) -> Iterator[None]:
    """joblib's backend for the cells; for dask, a ``dask.distributed.Client`` connected to ``scheduler``."""
    if backend != "dask":
        with parallel_config(backend=backend):
            yield
        return
    try:
        from dask.distributed import Client  # optional and heavy: only with backend dask
    except ImportError:
        raise RunError("backend: dask needs dask[distributed]: pip install 'bench-harness[cluster]'") from None
    try:
        client = Client(scheduler, timeout=30)
    except (OSError, TimeoutError) as exc:
        raise RunError(f"scheduler: cannot connect to dask scheduler {scheduler!r} ({exc})") from None
    try:
        with parallel_config(backend="dask"):
            yield
    finally:
        client.close()


def run_tasks(
    fn: Callable[[T], Outcome], tasks: list[T], *, jobs: int, backend: str, scheduler: str | None
) -> dict[str, Outcome]:
    """``fn`` over ``tasks`` on joblib's ``backend`` (a dask client for ``scheduler``), ``jobs`` workers; the outcomes
    by their ``cell_id``, each counted in the live progress (``progress.cell_done``) as it finishes. The attack cells
    and the certification cells run through this one place."""
    outcomes: dict[str, Outcome] = {}
    with parallel_backend(backend, scheduler):
        for outcome in Parallel(n_jobs=jobs, return_as="generator")(delayed(fn)(t) for t in tasks):
            outcomes[outcome.cell_id] = outcome  # type: ignore[attr-defined]
            progress.cell_done(outcome.cell_id, outcome.seconds)  # type: ignore[attr-defined]
    return outcomes


def usable_cores() -> int:
    """The cores this process may keep busy: its CPU affinity, lowered by a container's CPU quota.

    joblib's ``cpu_count`` reads the quota (``docker --cpus 2`` on a 64-core host is 2), as its
    ``effective_n_jobs(-1)`` does: threads are split over the same cores the workers are counted on.
    """
    return max(1, min(limits.cores(), cpu_count()))


def threads_per_worker(n_jobs: int) -> int:
    """Torch threads per worker so that workers x threads does not exceed the cores (``-1`` = all cores)."""
    return max(1, usable_cores() // max(1, effective_n_jobs(n_jobs)))


def plan_workers(backend: str, n_jobs: int, cells: int | None = None) -> tuple[int, int]:
    """``(n_jobs, torch threads per worker)`` for joblib (threads 0: leave torch's setting alone).

    ``cells``: how many cells will run. Local backends never start more workers than cells: an
    idle worker would only halve the threads of the busy ones (one cell with ``--n-jobs 2`` runs
    in this process with every core, as serially).
    """
    if backend != "dask" and cells is not None and n_jobs != 1:
        n_jobs = max(1, min(effective_n_jobs(n_jobs), cells))
    threads = threads_per_worker(n_jobs) if n_jobs != 1 else 0
    if backend == "dask":
        # One torch thread per dask task: a worker runs as many tasks at once as it has threads.
        n_jobs, threads = (-1 if n_jobs == 1 else n_jobs), 1
    return n_jobs, threads


PARALLEL_EFFICIENCY = 0.85
"""Workers must be predicted at least this fraction of ideal scaling (``0.85 x workers`` times faster
than serial cells), or ``--n-jobs`` runs the cells serially.

Measured on the 2-core CPU: a loky worker costs about 2.2 s to start (importing torch) and
about 1.5 s more in its first cell (loading the model, first calls of each op), and the
attacks' other ops (projections, noise draws) use torch's threads better than a bare
forward+backward pass. Two mlp suites at batch 100 and 50, predicted 1.50x and 1.66x, ran
0.50x and 0.73x as fast as serially; the shipped suites at batch 500 are predicted 1.06 to 1.31x.
"""


def required_gain(workers: int) -> float:
    """The predicted gain ``workers`` workers need for the cells to run in parallel."""
    return PARALLEL_EFFICIENCY * workers


@dataclass(frozen=True)
class WorkerPlan:
    """How the cells run: ``n_jobs`` workers with ``threads`` torch threads each (0: leave torch alone).

    ``requested``: the ``--n-jobs`` asked for; ``predicted_gain``: the measured prediction of
    serial over parallel cell time (``None`` when nothing was measured); ``reason``: one line.
    """

    n_jobs: int
    threads: int
    requested: int
    predicted_gain: float | None
    reason: str

    def as_manifest(self) -> dict[str, object]:
        return {
            "requested_n_jobs": self.requested,
            "n_jobs": self.n_jobs,
            "threads_per_worker": self.threads,
            "predicted_gain": self.predicted_gain,
            "reason": self.reason,
        }


def _step_seconds(model: nn.Module, x: torch.Tensor, y: torch.Tensor, threads: int) -> float:
    """Fastest of a few forward+backward passes (the unit of every gradient attack) with ``threads`` torch threads."""
    torch.set_num_threads(threads)

    def step() -> float:
        tick = time.perf_counter()
        xx = x.detach().clone().requires_grad_(True)
        loss = nn.functional.cross_entropy(model(xx), y)
        if loss.requires_grad:  # a model without an input gradient (a declared black box): its forward pass
            torch.autograd.grad(loss, xx, allow_unused=True)
        return time.perf_counter() - tick

    step()  # warm-up: first-call costs are not what the cells pay per step
    first = step()
    # a small model's pass is noisy: repeat it for about 20 ms; a large one's (tens of ms) twice in all
    repeats = max(1, min(50, int(0.02 / max(first, 1e-6))))
    return min(first, *(step() for _ in range(repeats)))


def predicted_gain(models: dict[str, tuple[nn.Module, int]], x: torch.Tensor, y: torch.Tensor, workers: int) -> float:
    """Serial cell time over parallel cell time, predicted from one forward+backward pass per model.

    ``models``: id -> (model, cells of that model still to run); ``x``, ``y``: one batch of
    the suite's data on the model's device. Serially every cell runs with torch's own thread
    count (a serial run leaves it alone); in parallel ``workers`` cells run at once with
    :func:`threads_per_worker` threads each. Where one op keeps every core busy (a large
    model, a large batch), the gain is near 1; where torch's threads idle (a small model or
    batch), it nears ``workers``.
    """
    per_worker = threads_per_worker(workers)
    before = torch.get_num_threads()
    serial = parallel = 0.0
    try:
        with torch.enable_grad():
            for model, cells in models.values():
                serial += cells * _step_seconds(model, x, y, before)
                parallel += cells * _step_seconds(model, x, y, per_worker) / workers
    finally:
        torch.set_num_threads(before)
    return serial / parallel if parallel > 0 else 1.0


def choose_workers(
    backend: str,
    n_jobs: int,
    *,
    cells: int,
    device: torch.device,
    measure: Callable[[int], float] | None,
    exact: bool = False,
) -> WorkerPlan:
    """The :class:`WorkerPlan` of a run: :func:`plan_workers`, then serial when parallel cells would not pay.

    On a local backend (loky, threading) and a CPU, with more than one worker planned and
    not ``exact``, ``measure(workers)`` (:func:`predicted_gain` on the suite's models) decides:
    under :func:`required_gain` the cells run serially with every core's threads, so that
    ``--n-jobs`` is never much slower than a serial run. dask runs as asked (a cluster's
    workers are not this machine's cores).
    """
    jobs, threads = plan_workers(backend, n_jobs, cells=cells)
    if jobs == 1 or backend == "dask" or device.type != "cpu" or exact or measure is None:
        fewer = backend != "dask" and jobs < effective_n_jobs(n_jobs)  # plan_workers capped them at the cells
        why = f"{jobs} worker(s) for {cells} cell(s) to run" if fewer else "as asked"
        return WorkerPlan(jobs, threads, n_jobs, None, why)
    workers = jobs  # plan_workers resolved -1 to a count
    try:
        gain = measure(workers)
    except Exception as exc:  # a model the probe cannot run: its cells will say why; run them as asked
        return WorkerPlan(jobs, threads, n_jobs, None, f"as asked (no prediction: {type(exc).__name__}: {exc})"[:300])
    needed = required_gain(workers)
    if gain < needed:
        why = (
            f"{workers} workers predicted {gain:.2f}x faster than one process with {torch.get_num_threads()} threads "
            f"(< {needed:.2f}x, what pays for starting them): cells run serially"
        )
        return WorkerPlan(1, 0, n_jobs, gain, why)
    return WorkerPlan(jobs, threads, n_jobs, gain, f"{workers} workers predicted {gain:.2f}x faster than serial")
