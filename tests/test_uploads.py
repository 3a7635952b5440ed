"""bench.tracking.uploads: a sync's MLflow calls on one background thread, in order, stopping at the first failure."""

from __future__ import annotations

import threading

import pytest

from bench.tracking.uploads import Uploads


def test_calls_run_in_order_on_one_other_thread() -> None:
    done: list[tuple[int, str]] = []
    with Uploads() as uploads:
        for i in range(20):
            uploads.submit(lambda i=i: done.append((i, threading.current_thread().name)))
        uploads.wait()
    assert [i for i, _ in done] == list(range(20))
    names = {name for _, name in done}
    assert len(names) == 1 and names != {threading.current_thread().name}


def test_the_first_failure_is_raised_and_nothing_after_it_runs() -> None:
    done: list[int] = []
    gate = threading.Event()

    def fail() -> None:
        raise ConnectionError("tracking server gone")

    with Uploads() as uploads:
        uploads.submit(gate.wait)  # everything below is queued before the failure happens
        uploads.submit(done.append, 1)
        uploads.submit(fail)
        for i in range(2, 6):
            uploads.submit(done.append, i)
        gate.set()
        with pytest.raises(ConnectionError, match="tracking server gone"):
            uploads.wait()
    assert done == [1]


def test_an_error_of_the_calling_thread_drops_the_queue() -> None:
    done: list[int] = []
    started, gate = threading.Event(), threading.Event()

    def running() -> None:
        started.set()
        gate.wait()

    threading.Timer(0.3, gate.set).start()  # the running call ends only after the error below
    with pytest.raises(RuntimeError, match="drawing failed"), Uploads() as uploads:
        uploads.submit(running)
        uploads.submit(done.append, 1)
        assert started.wait(10)  # the first call is running, the second queued
        raise RuntimeError("drawing failed")
    assert gate.is_set() and done == []  # the running call finished; the queued one never ran


def test_leaving_without_wait_still_raises_a_failure() -> None:
    def fail() -> None:
        raise ConnectionError("tracking server gone")

    with pytest.raises(ConnectionError, match="tracking server gone"), Uploads() as uploads:
        uploads.submit(fail)
