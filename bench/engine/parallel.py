"""Where cells run: joblib's backends (loky processes, threads, a dask.distributed cluster) and torch threads."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from joblib import effective_n_jobs, parallel_config

from bench.rundir import RunError

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


def threads_per_worker(n_jobs: int) -> int:
    """Torch threads per worker so that workers x threads does not exceed the cores (``-1`` = all cores)."""
    cores = os.cpu_count() or 1
    return max(1, cores // max(1, effective_n_jobs(n_jobs)))


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
