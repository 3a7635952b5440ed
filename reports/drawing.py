"""Figures drawn by a helper process, beside this process's own work after the cells.

matplotlib holds the GIL while it draws, so a thread cannot overlap drawing with the tables, the
report's HTML or MLflow's calls; a second process can. :func:`start` starts one helper process
(a :class:`~concurrent.futures.ProcessPoolExecutor` of one worker) forked from a ``forkserver``
that has imported :data:`PRELOAD` already, so a figure costs no imports there, and the helper
never holds torch's threads or a CUDA context (forking this process could). :func:`submit`
hands it a figure function; without a helper (:func:`start` not called, one core, no forkserver on
this platform, ``BENCH_DRAWING_PROCESS=0``) the function runs at once in this process. Either way
the PNG bytes are the same (tests compare them).

Start the helper before importing torch (the ``bench`` command line does, in
:func:`bench.cli.main`): on two cores its imports (about 2 s) then overlap torch's instead of the
attacks. If the helper dies, the figure is drawn here instead; an error raised by the figure
function is raised here as it would be inline.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import select
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Generic, TypeVar

from bench import limits
from bench.memory import peak_rss_bytes

T = TypeVar("T")

ENV = "BENCH_DRAWING_PROCESS"
"""``0`` (or ``false``, ``no``, ``off``): draw in this process, never start the helper."""

PRELOAD = ["reports.figures", "reports.overview"]
"""Imported by the forkserver once, before the helper is forked from it."""

_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None


def wanted(*, min_cores: int = 2) -> bool:
    """Whether a helper process can help here: ``min_cores`` usable cores or more (default 2: on one core
    it would only take turns with this process), a forkserver, not switched off by :data:`ENV`."""
    if os.environ.get(ENV, "").strip().lower() in ("0", "false", "no", "off"):
        return False
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return False
    return limits.cores() >= min_cores  # CPU affinity; a container's CPU quota is not read here


def start(*, min_cores: int = 2) -> bool:
    """Start the helper process (at most one, kept until :func:`stop` or exit); returns whether one runs.

    ``min_cores``: start it only with at least this many usable cores (:func:`wanted`).

    Returns at once: the forkserver imports :data:`PRELOAD` and forks the helper in the background.
    """
    global _pool
    with _lock:
        if _pool is not None:
            return True
        if not wanted(min_cores=min_cores):
            return False
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(PRELOAD)
        _pool = pool = ProcessPoolExecutor(
            max_workers=1, mp_context=context, initializer=_in_helper, initargs=(os.getpid(),)
        )
    # The first submit starts the forkserver and forks the helper from it, which waits for the
    # forkserver's imports: on a thread, so that this one goes on (importing torch, say) meanwhile.
    threading.Thread(target=_warm_up, args=(pool,), name="bench-drawing-start", daemon=True).start()
    return True


def _in_helper(parent: int) -> None:
    """Set up the helper. Ctrl-C reaches the whole process group, but stopping is ``parent``'s to decide
    (it stops the helper on its way out): ignored here, where it would print a KeyboardInterrupt
    traceback. A killed ``parent`` stops nothing, and the helper would wait for figures forever (and
    keep the forkserver alive): a thread ends it once ``parent`` is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with, args=(parent,), name="bench-drawing-watch", daemon=True).start()


def _exit_with(parent: int) -> None:
    """Exit once ``parent`` has exited: at once where Linux gives a pidfd (readable when it terminates,
    zombie or not: a killed command whose caller reads its output to the end before reaping it is a
    zombie meanwhile), else by asking every second whether the pid is still there."""
    try:
        watch = os.pidfd_open(parent)
    except (AttributeError, OSError):  # not Linux 5.3+, or parent already gone
        watch = None
    if watch is not None:
        select.select([watch], [], [])
        os._exit(0)  # nothing of the helper's is worth a clean exit: it only draws for parent
    while True:
        time.sleep(1.0)
        try:
            os.kill(parent, 0)  # signal 0: is it there?
        except OSError:  # gone (or the pid reused by another user's process: gone too)
            os._exit(0)


def _warm_up(pool: ProcessPoolExecutor) -> None:
    try:
        pool.submit(int).result()
    except (BrokenProcessPool, CancelledError, RuntimeError):  # died at once, or stopped: figures drawn here
        _discard(pool)


def running() -> bool:
    """Whether figures go to a helper process now."""
    return _pool is not None


def stop() -> None:
    """Stop the helper (figures queued and not yet drawn are dropped; read every result first)."""
    global _pool
    with _lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)


atexit.register(stop)


class Pending(Generic[T]):
    """A figure being drawn: :meth:`result` waits for it (drawn here if the helper process died)."""

    def __init__(self, fn: Callable[..., T], args: tuple[object, ...], kwargs: dict[str, object]) -> None:
        self._fn, self._args, self._kwargs = fn, args, kwargs
        self._future: Future[T] | None = None
        self._pool: ProcessPoolExecutor | None = None
        self._done = False
        self._value: T | None = None

    def result(self) -> T:
        """The figure function's return value; its exception, if it raised one."""
        if not self._done:
            value: T
            if self._future is None:
                value = self._fn(*self._args, **self._kwargs)
            else:
                try:
                    value = self._future.result()
                except (BrokenProcessPool, CancelledError):  # helper killed, or stopped first: drawn here
                    assert self._pool is not None
                    _discard(self._pool)
                    value = self._fn(*self._args, **self._kwargs)
            self._value, self._done = value, True
            # a finished figure keeps no inputs alive
            self._args, self._kwargs, self._future, self._pool = (), {}, None, None
        return self._value  # type: ignore[return-value]


def submit(fn: Callable[..., T], *args: object, **kwargs: object) -> Pending[T]:
    """``fn(*args, **kwargs)`` on the helper process if one runs (``fn`` and its arguments must
    pickle: a module-level function of :mod:`reports`), else in this process at once."""
    pending = Pending(fn, args, kwargs)
    pool = _pool
    if pool is not None:
        try:
            pending._future, pending._pool = pool.submit(fn, *args, **kwargs), pool
        except (BrokenProcessPool, RuntimeError):  # the helper died, or is shutting down: draw here
            _discard(pool)
    if pending._future is None:
        pending.result()
    return pending


def helper_peak_rss_bytes() -> int | None:
    """The helper process's peak resident set size so far (``None`` without one): ``bench perf`` adds it
    to the run's own, since the helper's memory is the run's too."""
    pool = _pool
    if pool is None:
        return None
    try:
        return pool.submit(peak_rss_bytes).result()
    except (BrokenProcessPool, RuntimeError):  # gone: its memory is no one's now
        return None


def _discard(broken: ProcessPoolExecutor) -> None:
    """Forget a broken helper: later figures are drawn in this process (until :func:`start` again)."""
    global _pool
    with _lock:
        if _pool is broken:
            _pool = None
    broken.shutdown(wait=False, cancel_futures=True)
