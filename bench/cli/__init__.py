"""The ``bench`` command line: one module per command, all on one typer app.

``run`` (run.py), ``validate`` (validate.py), ``ls`` (ls.py), ``sync`` (sync.py),
``baseline`` and ``check`` (check.py, the regression gate), ``crosscheck``
(crosscheck.py), ``perf`` (perf.py), ``report`` (report.py). The app and the
shared error handling are :mod:`bench.cli.app`: errors the user can fix print
one line and exit 2, a failing MLflow exits 1; no traceback reaches the user.
"""

from __future__ import annotations

# Importing a command module adds its commands to the app, in this order (the order of `bench --help`).
from bench.cli import run as _run  # noqa: F401

from bench.cli import validate as _validate  # noqa: F401  isort: skip
from bench.cli import ls as _ls  # noqa: F401  isort: skip
from bench.cli import sync as _sync  # noqa: F401  isort: skip
from bench.cli import check as _check  # noqa: F401  isort: skip
from bench.cli import crosscheck as _crosscheck  # noqa: F401  isort: skip
from bench.cli import perf as _perf  # noqa: F401  isort: skip
from bench.cli import report as _report  # noqa: F401  isort: skip
from bench.cli.app import app, console, err, user_errors

__all__ = ["app", "console", "err", "main", "user_errors"]


def main() -> None:  # pragma: no cover - console script entry
    app(prog_name="bench")
