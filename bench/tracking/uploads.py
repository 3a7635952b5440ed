"""MLflow calls of a sync made on one background thread, in order, while figures are drawn.

A sync spends about half of its time in MLflow calls (SQL, file copies, a commit per call) and
half drawing figures (the suite's comparison figure, a curve per cell). The figures are drawn by
the drawing process when one runs (:mod:`reports.drawing`), else by the calling thread; part of
each call waits on sqlite and the disk without holding the GIL, so on a second thread the calls
overlap the drawing either way (`suites/attacks_mnist.yaml`: 6.8 s one after the other, 4.2 s with
the calling thread drawing, 2.0 s with the drawing process). A call that logs a figure waits for
it. One thread keeps the calls in submission order; after a failure no later call runs, and the
failure is raised by :meth:`Uploads.wait` (an interrupted sync is redone whole by the next one).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from typing import Any


class Uploads:
    """Calls run in submission order on one thread; :meth:`wait` returns when all are done or raises the first error."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-mlflow")
        self._futures: list[Future[Any]] = []
        self._failed = False

    def submit(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Queue ``call(*args, **kwargs)``; it does not run if a call before it failed."""
        self._futures.append(self._pool.submit(self._run, call, args, kwargs))

    def _run(self, call: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self._failed:
            raise CancelledError("an earlier MLflow call of this sync failed")
        try:
            return call(*args, **kwargs)
        except BaseException:
            self._failed = True
            raise

    def wait(self) -> None:
        """Wait for every queued call; the first failure (the calls after it do not run) is raised here."""
        try:
            for future in self._futures:
                future.result()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._futures.clear()

    def __enter__(self) -> Uploads:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is None:
            self.wait()  # a failure is never dropped because wait() was not called
        else:  # an error of the calling thread: drop what is queued, let the running call finish
            self._pool.shutdown(wait=True, cancel_futures=True)
