"""Shared output and error handling of the `backfill` command line.

Invariants:
- a `UserError` or a click usage error becomes ONE line `error: <message>` on
  stderr and the exit code it carries (2: bad input), never a traceback; so
  does a database that cannot be reached (`Unreachable`, or an error that says
  so: exit 3, naming the masked URL and the cause), and any other error of the
  database (exit 1: the cause, e.g. a permission revoked mid-run); anything
  else is a bug and keeps its traceback;
- `--output json` writes JSON and nothing else on stdout; warnings always go
  to stderr, so stdout stays machine-readable;
- a listing that can be as large as a backfill streams (`emit_json_array`,
  `emit_jsonl`): each element, already JSON text, is written as it is read,
  in constant memory;
  a reader that goes away (`| head`) ends the command quietly with exit code
  1 (click's own handling of EPIPE), never with a traceback;
- tables are rich Tables on a console that emits no escape codes unless stdout
  is a terminal, and that never interprets user text (ids, reasons) as markup;
  cells fold instead of being cut with an ellipsis, so no value is hidden.
"""

from __future__ import annotations

import enum
import importlib
import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from backfill.config import Settings, redact
from backfill.errors import ConfigError, Unreachable, UserError
from backfill.store.reconnect import cause, is_database_error, is_unreachable

F = TypeVar("F", bound=Callable[..., Any])

# Backfill ids are INTEGER keys: anything else is refused as a usage error (exit 2).
BACKFILL_ID = click.IntRange(1, 2**31 - 1)

EXIT_INTERRUPTED = 130
PIPE_WIDTH = 160


class OutputFormat(enum.StrEnum):
    TABLE = "table"
    JSON = "json"
    JSONL = "jsonl"  # one JSON object a line, streamed: only where a command offers it


def output_option(fn: F) -> F:
    """`--output table|json` on a command; the command receives an `OutputFormat`."""
    return _output_option(OutputFormat.TABLE, OutputFormat.JSON)(fn)


def streaming_output_option(fn: F) -> F:
    """`--output table|json|jsonl`, for a listing that may be as large as a backfill."""
    return _output_option(*OutputFormat)(fn)


def _output_option(*formats: OutputFormat) -> Callable[[F], F]:
    return click.option(
        "--output",
        "-o",
        type=click.Choice([f.value for f in formats]),
        default=OutputFormat.TABLE.value,
        show_default=True,
        callback=lambda _ctx, _param, value: OutputFormat(value),
        help="Human-readable table or machine-readable JSON on stdout"
        + ("; jsonl: one JSON object a line." if OutputFormat.JSONL in formats else "."),
    )


def console() -> Console:
    """A console on the current stdout (click's test runner swaps it), created per use."""
    out = Console(markup=False, highlight=False, emoji=False)
    if not out.is_terminal and not os.environ.get("COLUMNS"):
        # Piped or captured: rich would assume 80 columns; wider tables fold less.
        out.width = PIPE_WIDTH
    return out


def table(*columns: str, title: str | None = None) -> Table:
    tbl = Table(title=title, title_justify="left", header_style="bold")
    for name in columns:
        tbl.add_column(name, overflow="fold")
    return tbl


def emit_json(data: object) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def emit_json_array(values: Iterable[str]) -> None:
    """A JSON array of `values`, each already JSON text, written as they come: `[`,
    one value a line, separated by `,`, then `]`. Constant memory."""
    write = sys.stdout.write  # looked up per call: click's test runner swaps stdout
    separator = "\n"
    write("[")
    for value in values:
        write(separator + value)
        separator = ",\n"
    write("]\n" if separator == "\n" else "\n]\n")
    sys.stdout.flush()


def emit_jsonl(values: Iterable[str]) -> None:
    """`values`, each already compact JSON text, one a line (JSON Lines), as they come."""
    write = sys.stdout.write
    for value in values:
        write(value + "\n")
    sys.stdout.flush()


def warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


def _error(message: str) -> None:
    # One line whatever the message: a newline would split what scripts grep.
    click.echo(f"error: {' '.join(message.split())}", err=True)


def _database() -> str:
    try:
        return f"the database at {redact(Settings.from_env().database_url)}"
    except ConfigError:  # unreachable: the command read the same settings before failing
        return "the database"


class BackfillGroup(click.Group):
    """The root group: turns user errors into one line and an exit code, and imports
    each command's module only when that command is asked for (`lazy_commands`:
    name -> "module:attribute")."""

    def __init__(self, *args: Any, lazy_commands: Mapping[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lazy = dict(lazy_commands)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self._lazy:
            module, _, attribute = self._lazy[cmd_name].partition(":")
            self.add_command(getattr(importlib.import_module(module), attribute), cmd_name)
        return super().get_command(ctx, cmd_name)

    def main(  # one signature for click's two overloads
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        code = self._run(
            lambda: super(BackfillGroup, self).main(
                args, prog_name, complete_var, standalone_mode=False, **extra
            )
        )
        if standalone_mode:
            sys.exit(code)
        return code

    def _run(self, invoke: Callable[[], Any]) -> int:
        try:
            rv = invoke()
        except click.exceptions.NoArgsIsHelpError as exc:
            exc.show()  # `backfill` or a group alone: the help, as click would print it
            return exc.exit_code
        except click.UsageError as exc:
            hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
            _error(exc.format_message() + hint)
            return exc.exit_code
        except click.ClickException as exc:
            _error(exc.format_message())
            return exc.exit_code
        except (UserError, Unreachable) as exc:
            _error(str(exc))
            return exc.exit_code
        except click.Abort:  # Ctrl-C; click raises it for KeyboardInterrupt too
            _error("interrupted")
            return EXIT_INTERRUPTED
        except Exception as exc:  # last: click.Abort is an Exception too
            if is_unreachable(exc):
                _error(f"cannot reach {_database()}: {cause(exc)}")
                return Unreachable.exit_code
            if is_database_error(exc):
                _error(f"{_database()} refused a statement: {cause(exc)}")
                return 1
            raise
        # A command returns None (success) or the exit code of `ctx.exit(code)`.
        return rv if isinstance(rv, int) else 0


def iso(moment: datetime | None) -> str | None:
    """A time in JSON: ISO 8601 (UTC, as the store returns it), or null."""
    return None if moment is None else moment.isoformat()


def when(moment: datetime | None) -> str:
    """A time in a table: ISO 8601 with a space, or `-`."""
    return "-" if moment is None else moment.isoformat(sep=" ")
