"""The typer app, its consoles, and the one place that maps expected errors to a message and an exit code.

Errors the user can fix (a bad suite, baseline, rule or run directory; an
unknown name; an unreadable, undecodable, too deep or corrupt file; an input over
a limit of :mod:`bench.limits`) print one line ``error: ...`` to stderr and exit
with status 2; a failing environment (MLflow down, a full disk, an I/O error)
exits with status 1. Anything else is a bug: one line naming the exception and
"run with --debug for the traceback", status 1. No traceback reaches the user
unless ``bench --debug`` asks for it. The one handler is :func:`handle`, applied
to every command by the app's group (and by :func:`user_errors`). Command modules
import from here, and :mod:`bench.cli` imports them, so the package has no
import cycle.
"""

from __future__ import annotations

import errno
import json
import sys
import traceback
import warnings
import zipfile
from collections.abc import Callable
from functools import wraps
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from bench.attacks import AttackError
from bench.data import DataError
from bench.gate.baseline import BaselineError
from bench.limits import LimitError
from bench.registry import RegistryError
from bench.rundir import RunError
from bench.runstate import RunIncomplete
from bench.suite import RuleError, SuiteError
from bench.tracking import TrackingUnavailable
from model_zoo import CheckpointError
from reports.sources import ReportError


class _Group(TyperGroup):
    """The app's group: every command runs inside the one handler (:func:`handle`)."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            if _passes_through(exc):
                raise
            raise handle(exc) from None


app = typer.Typer(
    cls=_Group,
    help="Adversarial robustness benchmark harness: run suites, log them to MLflow, report and gate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click help: typer's rich help prints a type for every option, so flags read `--no-mlflow <bool>`.
    rich_markup_mode=None,
)
# Wide when piped (CI logs), so the per-eps table is never truncated.
console = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)

BAD_INPUT: tuple[type[Exception], ...] = (
    SuiteError,
    RuleError,
    RunError,
    RegistryError,
    DataError,
    AttackError,
    CheckpointError,
    BaselineError,
    ReportError,
    LimitError,
    FileNotFoundError,
)
"""Errors in what the user gave (exit 2); the message names the file, field or option."""

ENVIRONMENT: tuple[type[Exception], ...] = (TrackingUnavailable,)
"""A failing environment (exit 1): the input was fine, a service was not."""

_DEBUG = [False]
"""``bench --debug`` (set by the app's callback, which runs before every command)."""


def _passes_through(exc: BaseException) -> bool:
    """Exits and usage errors of typer and (typer's own copy of) click: they print themselves."""
    return isinstance(exc, typer.Exit | typer.Abort) or type(exc).__module__.split(".")[0] in ("click", "typer")


ENVIRONMENT_ERRNO = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.ENOMEM, errno.EMFILE})
"""OS errors of a failing environment (exit 1); other OS errors are about a path the user gave (exit 2)."""

F = TypeVar("F", bound=Callable[..., Any])


@app.callback()
def _options(
    debug: Annotated[bool, typer.Option("--debug", help="on an error, show the traceback too")] = False,
) -> None:
    """Adversarial robustness benchmark harness: run suites, log them to MLflow, report and gate."""
    _DEBUG[0] = debug


def _one_line_warning(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> str:
    return f"warning: {message}\n"


warnings.formatwarning = _one_line_warning  # the CLI's warnings read like its errors: one line, no source line


def fail(message: str, *, code: int = 2) -> typer.Exit:
    """Print ``error: message`` to stderr and return the :class:`typer.Exit` to raise."""
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True, soft_wrap=True)
    return typer.Exit(code)


def _first_line(text: str, limit: int = 400) -> str:
    line = next((part for part in text.splitlines() if part.strip()), "")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def describe(exc: BaseException) -> tuple[str, int]:
    """The one-line message and exit code for ``exc`` (2: bad input, 1: environment or a bug)."""
    if isinstance(exc, ENVIRONMENT):
        return f"MLflow tracking failed: {exc}", 1
    if isinstance(exc, RunIncomplete):  # results on disk, figures or report not: the message says how to complete
        return str(exc), 1
    if isinstance(exc, BAD_INPUT):
        return str(exc), 2
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename is not None else ""
        what = exc.strerror or _first_line(str(exc)) or type(exc).__name__
        if exc.errno in ENVIRONMENT_ERRNO:
            return f"{where}{what} (errno {errno.errorcode.get(exc.errno or 0, exc.errno)})", 1
        return f"{where}{what}", 2
    if isinstance(exc, UnicodeDecodeError):
        return f"a file is not UTF-8 text (byte {exc.start}: {exc.reason})", 2
    if isinstance(exc, RecursionError):
        return "the input is nested too deeply to read", 2
    if type(exc).__module__.split(".")[0] == "pyarrow":  # ArrowInvalid, ArrowIOError: a corrupt parquet file
        return f"corrupt or unreadable table: {_first_line(str(exc))}", 2
    if isinstance(exc, zipfile.BadZipFile | EOFError):
        return f"corrupt or truncated file: {_first_line(str(exc)) or type(exc).__name__}", 2
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})", 2
    if isinstance(exc, ValidationError):
        return _first_line(str(exc).replace("\n", " ")), 2
    if isinstance(exc, ValueError | OverflowError):
        return _first_line(str(exc)) or type(exc).__name__, 2
    return f"unexpected {type(exc).__name__}: {_first_line(str(exc))} (run with --debug for the traceback)", 1


def handle(exc: BaseException) -> typer.Exit:
    """The one handler: print ``exc`` as one line (and its traceback under ``--debug``); the Exit to raise."""
    if _DEBUG[0]:
        traceback.print_exception(exc, file=sys.stderr)
    message, code = describe(exc)
    return fail(message, code=code)


def user_errors(fn: F) -> F:
    """Run a command inside :func:`handle` (the app's group does too; this keeps direct calls alike)."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if _passes_through(exc):
                raise
            raise handle(exc) from None

    return wrapper  # type: ignore[return-value]
