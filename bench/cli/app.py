"""The typer app, its consoles, and the one place that maps expected errors to a message and an exit code.

Errors the user can fix (a bad suite, baseline, rule or run directory; an
unknown name; an unreadable file) print one line ``error: ...`` to stderr and
exit with status 2; a failing environment (MLflow down) exits with status 1.
No traceback reaches the user. Command modules import from here, and
:mod:`bench.cli` imports them, so the package has no import cycle.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import typer
from rich.console import Console

from bench.attacks import AttackError
from bench.data import DataError
from bench.gate.baseline import BaselineError
from bench.registry import RegistryError
from bench.rundir import RunError
from bench.suite import RuleError, SuiteError
from bench.tracking import TrackingUnavailable
from model_zoo import CheckpointError
from reports.sources import ReportError

app = typer.Typer(
    help="Adversarial robustness benchmark harness: run suites, log them to MLflow, report and gate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
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
    FileNotFoundError,
)
"""Errors in what the user gave (exit 2); the message names the file, field or option."""

ENVIRONMENT: tuple[type[Exception], ...] = (TrackingUnavailable,)
"""A failing environment (exit 1): the input was fine, a service was not."""

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, *, code: int = 2) -> typer.Exit:
    """Print ``error: message`` to stderr and return the :class:`typer.Exit` to raise."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, markup=True)
    return typer.Exit(code)


def user_errors(fn: F) -> F:
    """Turn the harness' own error types into a one-line message and exit code 2 (bad input) or 1 (environment)."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ENVIRONMENT as exc:
            raise fail(f"MLflow tracking failed: {exc}", code=1) from None
        except BAD_INPUT as exc:
            raise fail(str(exc)) from None

    return wrapper  # type: ignore[return-value]
