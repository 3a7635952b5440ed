"""Live progress of a run: a rich bar on a terminal, plain rate-limited lines in a log, nothing with ``--quiet``.

A leaf module: the engine (cells), the zoo (training) and the command line
report through the module-level functions below, which do nothing unless a
:class:`Progress` is active in *this* process (:func:`active`). Cells that run
in joblib worker processes (loky, dask) therefore report only at cell
granularity, from the parent's loop; in serial mode (``n_jobs: 1``) or with
threads the finer per-eps and per-epoch steps show too.

In a log (stderr not a terminal) every finished cell prints one line with its
count ``[12/26]``, samples, elapsed time and an estimate of the time left;
finer steps (an eps of a sweep, an epoch) print at most one line every
``interval`` seconds (``BENCH_PROGRESS_INTERVAL``, default 10), plus the last
epoch of each training, so a CI log shows life without flooding.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator, Mapping
from typing import IO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as Bar

_current: Progress | None = None


def _clock(seconds: float) -> str:
    seconds = max(0, round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """One run's progress: ``cells`` to do on ``samples`` samples each, written to ``stream`` (default stderr)."""

    def __init__(
        self, *, stream: IO[str] | None = None, tty: bool | None = None, interval: float | None = None
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        env = os.environ.get("BENCH_PROGRESS_INTERVAL")
        self.interval = interval if interval is not None else float(env) if env else 10.0
        self.total = 0
        self.unit = "attacks"
        self.done = 0
        self.samples = 0
        self.per_cell: dict[str, int] = {}
        self.samples_total = 0
        self.samples_done = 0
        self.start = time.perf_counter()
        self._last_line: float | None = None  # nothing printed yet (perf_counter's zero is arbitrary)
        self._bar = None
        self._task = None

    # -- output --------------------------------------------------------------------------------------------------
    def line(self, text: str) -> None:
        """Print one plain line now (above the bar on a terminal)."""
        self._last_line = time.perf_counter()
        if self._bar is not None:
            self._bar.console.print(text, highlight=False, markup=False)
        else:
            print(text, file=self.stream, flush=True)

    def step(self, text: str, *, force: bool = False) -> None:
        """A fine step: on a terminal it updates the bar's description; in a log, a line at most every ``interval``."""
        if self._bar is not None:
            self._bar.update(self._task, description=text)
            return
        if self.tty and not force:
            return  # a terminal shows tqdm's training bar; the last epoch still leaves a line
        if force or self._last_line is None or time.perf_counter() - self._last_line >= self.interval:
            self.line(f"{self._count()} {text} ({self._times()})")

    def _count(self) -> str:
        return f"[{self.done}/{self.total}]" if self.total else "[prep]"

    def _times(self) -> str:
        elapsed = time.perf_counter() - self.start
        if self.done and self.total > self.done:
            eta = elapsed / self.done * (self.total - self.done)
            return f"elapsed {_clock(elapsed)}, ETA {_clock(eta)}"
        return f"elapsed {_clock(elapsed)}"

    # -- the run's events -------------------------------------------------------------------------------------------
    def cells(self, total: int, samples: int | Mapping[str, int], *, unit: str = "attacks") -> None:
        """The cell phase starts: ``total`` cells of ``samples`` samples each (or per cell id: ``AttackSpec.n``);
        ``unit`` names what the cells are (``attacks``, or ``certifiers`` for the certification cells)."""
        self.total, self.done, self.unit = total, 0, unit
        self.per_cell = dict(samples) if isinstance(samples, Mapping) else {}
        self.samples = 0 if isinstance(samples, Mapping) else samples
        self.samples_total = sum(self.per_cell.values()) if self.per_cell else total * self.samples
        self.samples_done = 0
        self.start = time.perf_counter()
        if self.tty and total:
            self._bar = Bar(
                TextColumn("cells"),
                MofNCompleteColumn(),
                BarColumn(),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                TextColumn("{task.description}"),
                console=Console(file=self.stream),
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task("", total=total)

    def cell_done(self, cell_id: str, seconds: float) -> None:
        self.done += 1
        self.samples_done += self.per_cell.get(cell_id, self.samples)
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done, description=f"done {cell_id}")
        self.line(
            f"[{self.done}/{self.total}] done {cell_id} in {seconds:.1f}s "
            f"({self.samples_done}/{self.samples_total} samples x {self.unit}; {self._times()})"
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


@contextlib.contextmanager
def active(progress: Progress | None) -> Iterator[Progress | None]:
    """Make ``progress`` the reporter of this process for the block (``None``: report nothing, as ``--quiet``)."""
    global _current
    previous, _current = _current, progress
    try:
        yield progress
    finally:
        if progress is not None:
            progress.close()
        _current = previous


def cells(total: int, samples: int | Mapping[str, int], *, unit: str = "attacks") -> None:
    if _current is not None:
        _current.cells(total, samples, unit=unit)


def cell_done(cell_id: str, seconds: float) -> None:
    if _current is not None:
        _current.cell_done(cell_id, seconds)


def eps_done(cell_id: str, index: int, count: int, eps: float, samples_done: int, samples: int) -> None:
    """A cell in this process finished eps ``index`` (0-based) of ``count`` on ``samples_done`` of ``samples``."""
    if _current is not None:
        _current.step(f"{cell_id}: eps {index + 1}/{count} ({eps:g}), samples {samples_done}/{samples}")


def epoch_done(
    desc: str,
    epoch: int,
    epochs: int,
    loss: float,
    accuracy: float,
    *,
    adv_accuracy: float | None = None,
    adv_word: str = "adversarial",
) -> None:
    """Training ``desc`` finished ``epoch`` (1-based) of ``epochs``; the last epoch always prints in a log.

    ``adv_accuracy``: adversarial training's accuracy on its own training examples (``accuracy`` is then the clean one);
    ``adv_word`` names it (certified training: ``verified``, the fraction its bounds verified).
    """
    if _current is not None:
        adv = "" if adv_accuracy is None else f" {adv_word} {adv_accuracy:.3f}"
        _current.step(
            f"{desc}: epoch {epoch}/{epochs} loss {loss:.4f} train accuracy {accuracy:.3f}{adv}", force=epoch == epochs
        )


def note(text: str) -> None:
    """A one-off line (a phase starting), through the active reporter."""
    if _current is not None:
        _current.line(text)
