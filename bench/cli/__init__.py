"""The ``bench`` command line: one module per command, all on one typer app.

``run`` (run.py), ``validate`` (validate.py), ``ls`` (ls.py), ``sync`` (sync.py),
``baseline`` and ``check`` (check.py, the regression gate), ``crosscheck``
(crosscheck.py), ``perf`` (perf.py), ``report`` (report.py), ``zoo`` (zoo.py: reference weights). The app and the
shared error handling are :mod:`bench.cli.common` (``from bench.cli import app`` gives the complete
app, every command registered): errors the user can fix print
one line and exit 2, a failing MLflow exits 1; no traceback reaches the user.

Fast paths. The full app imports torch and the whole stack (its error types
live there), which takes seconds; ``bench``, ``bench --help``, ``bench
--version`` and ``bench ls`` need none of it, so :func:`main` answers them from
this light module (a static table of the commands, checked equal to the full
app by tests/test_cli_habits.py) and from :mod:`bench.cli.ls` (which reads a
generated JSON catalog, not the registries). Everything else loads the full
app. The command modules are loaded with :func:`importlib.import_module` on
first use of :data:`app` (module ``__getattr__``), never by a function-level
``import`` statement: the architecture test forbids those for project modules,
and importing them here at module level would make every fast path pay for torch.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click
import typer

from bench import __version__
from reports import drawing

COMMAND_MODULES = (
    "bench.cli.run",
    "bench.cli.validate",
    "bench.cli.ls",
    "bench.cli.sync",
    "bench.cli.check",
    "bench.cli.crosscheck",
    "bench.cli.perf",
    "bench.cli.report",
    "bench.cli.zoo",
)
"""Importing one adds its commands to the app, in this order (the order of ``bench --help``)."""

COMMANDS: dict[str, str] = {
    "run": "Run a suite: evaluate every model x attack x eps, write the run directory, log to MLflow.",
    "validate": "Check suite files without running them (schema, names, attack parameters, data files, weights).",
    "ls": "List registered data sets, models and attacks (attacks with their norms and parameters).",
    "sync": "Mirror a finished run directory into MLflow (again).",
    "baseline": "Write a baseline file from a run directory (the regression gate's reference).",
    "check": "Gate a run against a baseline and the suite's checks: rules.",
    "crosscheck": "Run attacks side by side with ART and report the agreement.",
    "perf": "Time attacks against the hardware bound and against ART.",
    "report": "Render the report of a run directory (or compare runs) without re-running anything.",
    "zoo": "The zoo's reference weights: list, train, export, import, verify.",
}
"""``bench --help`` without loading the app: name -> one line (tests check the names against the full app)."""

HELP = "Adversarial robustness benchmark harness: run suites, log them to MLflow, report and gate."

__all__ = ["COMMANDS", "app", "console", "err", "main", "user_errors"]

_FULL = ("app", "console", "err", "user_errors")


def full_app() -> typer.Typer:
    """The typer app with every command registered (imports torch and the whole stack)."""
    for name in COMMAND_MODULES:
        importlib.import_module(name)  # lazy on purpose: see the module docstring
    app_module = importlib.import_module("bench.cli.common")
    ls = importlib.import_module("bench.cli.ls")
    if not any(info.name == "ls" for info in app_module.app.registered_commands):
        app_module.app.command("ls", help=COMMANDS["ls"])(ls.list_registered)
    return app_module.app


def __getattr__(name: str) -> Any:
    if name in _FULL:
        full_app()
        return getattr(importlib.import_module("bench.cli.common"), name)
    raise AttributeError(f"module 'bench.cli' has no attribute {name!r}")


def _light_group() -> click.Group:
    """``bench --help`` and ``--version`` from the static table."""
    group = click.Group(name="bench", help=HELP, no_args_is_help=True)
    group.params.append(click.Option(["--debug"], is_flag=True, help="on an error, show the traceback too"))
    click.version_option(__version__, "--version", prog_name="bench", message="%(prog)s %(version)s")(group)
    for name, line in COMMANDS.items():
        group.add_command(click.Command(name, help=line, short_help=line))
    return group


def fast_path(args: list[str]) -> str | None:
    """``"help"``, ``"version"`` or ``"ls"`` when ``args`` need no torch; ``None`` for the full app."""
    options = []
    for arg in args:
        if not arg.startswith("-"):
            return "ls" if arg == "ls" else None
        options.append(arg)
    if "--version" in options:
        return "version"
    if not args or "--help" in options or "-h" in options:
        return "help"
    return None


def main(args: list[str] | None = None) -> None:  # pragma: no cover - console script entry
    args = sys.argv[1:] if args is None else args
    path = fast_path(args)
    if path in ("help", "version"):
        _light_group()(args, prog_name="bench")
    elif path == "ls":
        ls = importlib.import_module("bench.cli.ls")  # the torch-free command: see the module docstring
        typer.main.get_command(ls.ls_app)(args[args.index("ls") + 1 :], prog_name="bench ls")
    else:
        if _draws(args):
            drawing.start()  # before torch's import, which its own imports then overlap (reports.drawing)
        full_app()(args, prog_name="bench")


DRAWING_COMMANDS = frozenset({"run", "report", "sync", "perf"})
"""Commands that draw figures after their main work, so start the drawing process first."""


def _draws(args: list[str]) -> bool:
    """Whether ``args`` run a command of :data:`DRAWING_COMMANDS` (not its ``--help``)."""
    command = next((arg for arg in args if not arg.startswith("-")), None)
    return command in DRAWING_COMMANDS and "--help" not in args and "-h" not in args
