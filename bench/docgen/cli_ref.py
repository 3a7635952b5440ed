"""The command-line reference: every ``bench`` command and its options, read from the typer app itself."""

from __future__ import annotations

from typing import Any

import typer

from bench.cli import full_app
from bench.docgen.markdown import cell, table

# typer ships its own copy of click (``typer._click``), so commands and parameters are told apart by
# their click attributes (``list_commands``, ``param_type_name``), not by the classes of a click import.


def _commands(group: Any, prefix: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    ctx = group.context_class(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        path = f"{prefix} {name}"
        if hasattr(command, "list_commands"):
            out.extend(_commands(command, path))
        else:
            out.append((path, command))
    return out


def _usage(path: str, command: Any) -> str:
    args = " ".join(
        (p.metavar or p.name or "").upper() + ("..." if p.nargs == -1 else "")
        for p in command.params
        if p.param_type_name == "argument"
    )
    return f"{path} {args}".strip()


def _option(param: Any, ctx: Any) -> list[str]:
    """``[option with its value, meaning]`` as ``bench COMMAND --help`` shows them."""
    record = param.get_help_record(ctx)
    shown, meaning = (record[0], record[1]) if record else ("/".join(param.opts), param.help or "")
    return [f"`{shown}`", cell(meaning)]


def cli_reference() -> str:
    """One section per command (``bench zoo`` subcommands included): usage, help and an options table."""
    group = typer.main.get_command(full_app())
    parts = []
    for path, command in _commands(group, "bench"):
        help_text = (command.help or "").split("\f", 1)[0].strip()
        parts.append(f"### `{path}`\n\n```text\n{_usage(path, command)} [OPTIONS]\n```\n\n{help_text}\n")
        ctx = command.context_class(command, info_name=path)
        options = [p for p in command.params if p.param_type_name == "option" and not p.hidden and p.name != "help"]
        if options:
            parts.append(table(["option", "meaning"], [_option(p, ctx) for p in options]))
    return "\n".join(parts)
