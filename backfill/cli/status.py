"""`backfill status [ID]`, `backfill list`, `backfill tasks ID`: read-only reports.

Invariants:
- read only: the embedded database is never created here; a missing one
  simply holds no backfills;
- each report comes from one consistent snapshot (`store.status.reading`);
- JSON dates are ISO 8601 in UTC; JSON state counts list every state of the
  enum, zeros included, so their keys never depend on progress.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import click
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from backfill.cli.output import OutputFormat, console, emit_json, output_option, table
from backfill.config import Settings
from backfill.errors import UserError
from backfill.states import RUN_FINISHED, BackfillState, RunState, TIState
from backfill.store import status
from backfill.store.status import BackfillNotFound, Listed, Summary, TaskRow

# Backfill ids are INTEGER keys: anything else is refused as a usage error (exit 2).
BACKFILL_ID = click.IntRange(1, 2**31 - 1)
_BAR_WIDTH = 30
_SHOWN = 200  # characters of options / conf in the status panel (JSON has all)


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.isoformat(sep=" ")


@click.command("status")
@click.argument("backfill_id", metavar="[ID]", type=BACKFILL_ID, required=False)
@output_option
def status_command(backfill_id: int | None, output: OutputFormat) -> None:
    """Progress of backfill ID (default: the most recent one): runs and TIs per state."""
    with status.reading(Settings.from_env()) as conn:
        if conn is not None and backfill_id is None:
            backfill_id = status.latest_id(conn)
        found = None if conn is None or backfill_id is None else status.summary(conn, backfill_id)
    if found is None:
        if backfill_id is None:
            raise UserError("no backfills yet; start one with `backfill run` or `backfill create`")
        raise BackfillNotFound(backfill_id)
    if output is OutputFormat.JSON:
        emit_json(summary_json(found))
    else:
        console().print(_summary_panel(found))


def _runs_finished(found: Summary) -> tuple[int, int]:
    done = sum(found.runs.get(state.value, 0) for state in RUN_FINISHED)
    return done, sum(found.runs.values())


def summary_json(found: Summary) -> dict[str, Any]:
    done, total = _runs_finished(found)
    return {
        "id": found.id,
        "dag_id": found.dag_id,
        "state": found.state.value,
        "start": iso(found.start),
        "end": iso(found.end),
        "created_at": iso(found.created_at),
        "updated_at": iso(found.updated_at),
        "runs": {state.value: found.runs.get(state.value, 0) for state in RunState},
        "task_instances": {
            state.value: found.task_instances.get(state.value, 0) for state in TIState
        },
        "progress": {"runs_finished": done, "runs_total": total},
        "options": found.options,
        "conf": found.conf,
    }


def _counts(counts: dict[str, int], order: type[RunState] | type[TIState]) -> str:
    shown = [f"{state.value} {counts[state.value]}" for state in order if counts.get(state.value)]
    return ", ".join(shown) or "none yet"


def _progress(done: int, total: int) -> str:
    if total == 0:
        return "no runs"
    filled = round(_BAR_WIDTH * done / total)
    bar = "#" * filled + "-" * (_BAR_WIDTH - filled)
    return f"[{bar}] {done}/{total} runs finished ({100 * done // total}%)"


def _summary_panel(found: Summary) -> Panel:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    done, total = _runs_finished(found)
    rows = [
        ("state", found.state.value),
        ("range", f"{_when(found.start)} .. {_when(found.end)} (UTC, inclusive)"),
        ("progress", _progress(done, total)),
        ("runs", _counts(found.runs, RunState)),
        ("task instances", _counts(found.task_instances, TIState)),
        ("created", _when(found.created_at)),
        ("updated", _when(found.updated_at)),
        ("options", _compact(found.options)),
        ("conf", _compact(found.conf)),
    ]
    for name, value in rows:
        grid.add_row(name, Text(value))
    title = Text(f"Backfill {found.id}: {found.dag_id}")
    return Panel(grid, title=title, title_align="left", expand=False)


def _compact(data: dict[str, Any]) -> str:
    """`key=value, ...` (values as JSON unless plain strings), cut to fit a panel row."""
    text = ", ".join(
        f"{key}={value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)}"
        for key, value in data.items()
    )
    return (text[:_SHOWN] + "...") if len(text) > _SHOWN else (text or "-")


@click.command("list")
@click.option(
    "--state",
    type=click.Choice([s.value for s in BackfillState]),
    help="Only backfills in this state.",
)
@output_option
def list_command(state: str | None, output: OutputFormat) -> None:
    """Every backfill, newest first, with its progress."""
    wanted = None if state is None else BackfillState(state)
    with status.reading(Settings.from_env()) as conn:
        rows = [] if conn is None else status.list_backfills(conn, wanted)
    if output is OutputFormat.JSON:
        emit_json([listed_json(row) for row in rows])
        return
    if not rows:
        click.echo("no backfills yet" if state is None else f"no {state} backfills")
        return
    tbl = table("id", "dag_id", "state", "start", "end", "runs done", "TIs done", "created")
    for row in rows:
        tbl.add_row(
            str(row.id),
            row.dag_id,
            row.state.value,
            _when(row.start),
            _when(row.end),
            f"{row.runs_finished}/{row.runs_total}",
            f"{row.task_instances_finished}/{row.task_instances_total}",
            _when(row.created_at),
        )
    console().print(tbl)


def listed_json(row: Listed) -> dict[str, Any]:
    return {
        "id": row.id,
        "dag_id": row.dag_id,
        "state": row.state.value,
        "start": iso(row.start),
        "end": iso(row.end),
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
        "runs_total": row.runs_total,
        "runs_finished": row.runs_finished,
        "task_instances_total": row.task_instances_total,
        "task_instances_finished": row.task_instances_finished,
    }


@click.command("tasks")
@click.argument("backfill_id", metavar="ID", type=BACKFILL_ID)
@click.option(
    "--state", type=click.Choice([s.value for s in TIState]), help="Only TIs in this state."
)
@output_option
def tasks_command(backfill_id: int, state: str | None, output: OutputFormat) -> None:
    """The task instances of backfill ID, by logical date then task order."""
    wanted = None if state is None else TIState(state)
    with status.reading(Settings.from_env()) as conn:
        rows = None if conn is None else status.task_rows(conn, backfill_id, wanted)
    if rows is None:
        raise BackfillNotFound(backfill_id)
    if output is OutputFormat.JSON:
        emit_json([task_json(row) for row in rows])
        return
    if not rows:
        click.echo(
            f"backfill {backfill_id} has no task instances"
            + (f" in state {state}" if state else "")
        )
        return
    tbl = table("logical date", "task_id", "state", "try", "hostname", "start", "end", "error")
    for row in rows:
        tbl.add_row(
            _when(row.logical_date),
            row.task_id,
            row.state.value,
            f"{row.try_number}/{row.max_tries + 1}",
            row.hostname or "-",
            _when(row.start_date),
            _when(row.end_date),
            row.last_error or "",
        )
    console().print(tbl)


def task_json(row: TaskRow) -> dict[str, Any]:
    return {
        "dag_id": row.dag_id,
        "task_id": row.task_id,
        "run_id": row.run_id,
        "logical_date": iso(row.logical_date),
        "state": row.state.value,
        "try_number": row.try_number,
        "max_tries": row.max_tries,
        "hostname": row.hostname,
        "start_date": iso(row.start_date),
        "end_date": iso(row.end_date),
        "pool": row.pool,
        "last_error": row.last_error,
    }
