"""`backfill status [ID]`: one backfill's progress, runs and TIs per state.

Invariants:
- read only: the embedded database is never created here; a missing one
  simply holds no backfills;
- the report comes from one consistent snapshot (`store.status.reading`) and
  is bounded at any backfill size: counts are aggregates;
- JSON dates are ISO 8601 in UTC; JSON state counts list every state of the
  enum, zeros included, so their keys never depend on progress.
"""

from __future__ import annotations

import json
from typing import Any

import click
import pendulum
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from backfill.cli.output import (
    BACKFILL_ID,
    OutputFormat,
    console,
    emit_json,
    output_option,
    when,
)
from backfill.cli.story import panel_rows, print_story
from backfill.client.shapes import runs_finished
from backfill.client.story import read_story, status_json
from backfill.config import Settings
from backfill.errors import UserError
from backfill.model.states import RunState, TIState
from backfill.store import status
from backfill.store.errors import BackfillNotFound
from backfill.store.status import Summary

_BAR_WIDTH = 30
_SHOWN = 200  # characters of options / conf in the status panel (JSON has all)


@click.command("status")
@click.argument("backfill_id", metavar="[ID]", type=BACKFILL_ID, required=False)
@output_option
def status_command(backfill_id: int | None, output: OutputFormat) -> None:
    """Progress of backfill ID (default: the most recent one): runs and TIs per state."""
    with status.reading(Settings.from_env()) as conn:
        if conn is not None and backfill_id is None:
            backfill_id = status.latest_id(conn)
        found = None if conn is None or backfill_id is None else status.summary(conn, backfill_id)
        if found is not None:
            assert conn is not None
            parts = read_story(conn, found, now=pendulum.now("UTC"))
    if found is None:
        if backfill_id is None:
            raise UserError("no backfills yet; start one with `backfill run` or `backfill create`")
        raise BackfillNotFound(backfill_id)
    if output is OutputFormat.JSON:
        emit_json(status_json(found, parts))
        return
    out = console()
    out.print(_summary_panel(found, panel_rows(parts)))
    print_story(out, found.id, parts)


def _counts(counts: dict[str, int], order: type[RunState] | type[TIState]) -> str:
    shown = [f"{state.value} {counts[state.value]}" for state in order if counts.get(state.value)]
    return ", ".join(shown) or "none yet"


def _progress(done: int, total: int) -> str:
    if total == 0:
        return "no runs"
    filled = round(_BAR_WIDTH * done / total)
    bar = "#" * filled + "-" * (_BAR_WIDTH - filled)
    return f"[{bar}] {done}/{total} runs finished ({100 * done // total}%)"


def _summary_panel(found: Summary, story: list[tuple[str, str]]) -> Panel:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    done, total = runs_finished(found)
    rows = [
        ("state", found.state.value),
        ("range", f"{when(found.start)} .. {when(found.end)} (UTC, inclusive)"),
        ("progress", _progress(done, total)),
        ("runs", _counts(found.runs, RunState)),
        ("task instances", _counts(found.task_instances, TIState)),
        *story,
        ("created", when(found.created_at)),
        ("updated", when(found.updated_at)),
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
