"""`backfill status [ID]`, `backfill list`, `backfill tasks ID`: read-only reports.

Invariants:
- read only: the embedded database is never created here; a missing one
  simply holds no backfills;
- each report comes from one consistent snapshot (`store.status.reading`);
- bounded at any backfill size: counts and totals are aggregates; rows are
  paged and filtered in SQL. A table shows one page (`tasks`: 100 TIs after
  the counts by task and state; `list`: the newest 50) and says which rows it
  showed when there are more. `tasks -o json` gives 100 TIs unless --limit says
  otherwise (`0`: all), and says on stderr when more match; `tasks -o jsonl`
  gives every matching TI. JSON and JSONL stream from a server-side cursor:
  memory stays flat whatever the number of rows written;
- `tasks -s/-e` read a date without an offset in UTC, not in the DAG's
  timezone (as `run` does): the dates shown are UTC, and `tasks` never loads
  DAG files, so it answers whatever the DAGs folder holds;
- JSON dates are ISO 8601 in UTC; JSON state counts list every state of the
  enum, zeros included, so their keys never depend on progress.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from json.encoder import encode_basestring
from typing import Any, TypeVar

import click
import pendulum
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from sqlalchemy.engine import Connection

from backfill.cli.output import (
    OutputFormat,
    console,
    emit_json,
    emit_json_array,
    emit_jsonl,
    output_option,
    streaming_output_option,
    table,
    warn,
)
from backfill.config import Settings
from backfill.errors import UserError
from backfill.model.dates import as_utc, parse_cli_date
from backfill.model.errors import BadRange
from backfill.model.states import RUN_FINISHED, BackfillState, RunState, TIState
from backfill.store import status
from backfill.store.errors import BackfillNotFound
from backfill.store.status import Listed, Summary, TaskRow

# Backfill ids are INTEGER keys: anything else is refused as a usage error (exit 2).
BACKFILL_ID = click.IntRange(1, 2**31 - 1)
_BAR_WIDTH = 30
_SHOWN = 200  # characters of options / conf in the status panel (JSON has all)
LIST_PAGE = 50  # backfills a `list` table shows unless --limit says otherwise
TASKS_PAGE = 100  # TIs `tasks` shows (table or JSON) unless --limit says otherwise
_TABLE_CHUNK = 1000  # TI rows per rendered table: rich lays a whole table out in memory

F = TypeVar("F", bound=Callable[..., Any])


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


def _limit(given: int | None, default: int | None) -> int | None:
    """`--limit` as the store takes it: None for no limit (`0` on the command line)."""
    value = default if given is None else given
    return value or None


def _paging_options(what: str, *, defaults: str) -> Callable[[F], F]:
    """`--limit N` (None when not given: the command applies its default) and `--offset M`."""

    def decorate(fn: F) -> F:
        fn = click.option(
            "--offset",
            type=click.IntRange(min=0),
            default=0,
            metavar="M",
            help=f"Skip the first M {what}.",
        )(fn)
        return click.option(
            "--limit",
            type=click.IntRange(min=0),
            metavar="N",
            help=f"At most N {what} (default: {defaults}; 0: all).",
        )(fn)

    return decorate


def _showing(what: str, offset: int, shown: int, total: int, hint: str) -> str:
    if shown == 0:
        return f"no {what} from offset {offset}: {total} in all; use a smaller --offset"
    return f"showing {what} {offset + 1}-{offset + shown} of {total}; use {hint} to see others"


@click.command("list")
@click.option(
    "--state",
    type=click.Choice([s.value for s in BackfillState]),
    help="Only backfills in this state.",
)
@_paging_options("backfills", defaults=f"{LIST_PAGE} in a table, all in JSON")
@output_option
def list_command(state: str | None, limit: int | None, offset: int, output: OutputFormat) -> None:
    """Every backfill, newest first, with its progress.

    Progress is counted for the backfills shown only: a table shows the newest
    50 unless --limit says otherwise; JSON lists every backfill."""
    wanted = None if state is None else BackfillState(state)
    as_table = output is OutputFormat.TABLE
    page = _limit(limit, LIST_PAGE if as_table else None)
    with status.reading(Settings.from_env()) as conn:
        if conn is None:
            rows, total = [], 0
        else:
            rows = status.list_backfills(conn, wanted, limit=page, offset=offset)
            total = status.count_backfills(conn, wanted) if as_table else len(rows)
    if not as_table:
        emit_json([listed_json(row) for row in rows])
        return
    if total == 0:
        click.echo("no backfills yet" if state is None else f"no {state} backfills")
        return
    if rows:
        console().print(_listed_table(rows))
    if offset > 0 or len(rows) < total:
        hint = "--offset/--limit (--limit 0: all), --state"
        click.echo(_showing("backfills", offset, len(rows), total, hint))


def _listed_table(rows: list[Listed]) -> Table:
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
    return tbl


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


def _task_regex(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        try:
            re.compile(value)
        except re.error as exc:
            raise click.BadParameter(f"{value!r} is not a regular expression: {exc}") from None
    return value


@dataclass(frozen=True, kw_only=True)
class _TasksQuery:
    """What `backfill tasks` was asked for, parsed and checked."""

    backfill_id: int
    where: status.TaskFilter
    regex: str | None  # resolved to `where.task_ids` against the backfill's tasks
    limit: int | None  # None: every matching TI
    offset: int
    asked: str  # the filters as typed, to say what matched nothing


@click.command("tasks")
@click.argument("backfill_id", metavar="ID", type=BACKFILL_ID)
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice([s.value for s in TIState]),
    help="Only TIs in this state; repeat it for several.",
)
@click.option(
    "--task-regex",
    metavar="RE",
    callback=_task_regex,
    help="Only the tasks whose id matches RE (re.search, as for `run`).",
)
@click.option(
    "-s",
    "--start-date",
    "start",
    metavar="DATE",
    help="Only logical dates from DATE (YYYY-MM-DD or ISO 8601; UTC unless it has an offset).",
)
@click.option(
    "-e", "--end-date", "end", metavar="DATE", help="Only logical dates up to DATE, inclusive."
)
@_paging_options("matching TIs", defaults=f"{TASKS_PAGE}, all with -o jsonl")
@streaming_output_option
def tasks_command(
    *,
    backfill_id: int,
    states: tuple[str, ...],
    task_regex: str | None,
    start: str | None,
    end: str | None,
    limit: int | None,
    offset: int,
    output: OutputFormat,
) -> None:
    """The task instances of backfill ID, by logical date then task order.

    A table first counts the matching TIs by task and state, then lists a page
    of them. `-o jsonl` streams every matching TI, one JSON object a line, in
    constant memory; so does `-o json --limit 0`, as one array.

    Dates without an offset are read in UTC, as the dates shown are: `tasks`
    never loads the DAG file, so it works whatever the DAGs folder holds."""
    first, last = _logical_date(start, "--start-date"), _logical_date(end, "--end-date")
    if first is not None and last is not None and first > last:
        raise BadRange(f"--start-date {start} is after --end-date {end}: no date can match")
    asked = [f"--state {s}" for s in states] + [
        f"{name} {value!r}"
        for name, value in (("--task-regex", task_regex), ("-s", start), ("-e", end))
        if value is not None
    ]
    query = _TasksQuery(
        backfill_id=backfill_id,
        where=status.TaskFilter(states=frozenset(map(TIState, states)), start=first, end=last),
        regex=task_regex,
        limit=_limit(limit, None if output is OutputFormat.JSONL else TASKS_PAGE),
        offset=offset,
        asked=" ".join(asked),
    )
    with status.reading(Settings.from_env()) as conn:
        if conn is None or not status.exists(conn, backfill_id):
            raise BackfillNotFound(backfill_id)
        if output is OutputFormat.TABLE:
            _tasks_table(conn, query)
        else:
            _tasks_json(conn, query, jsonl=output is OutputFormat.JSONL)


def _logical_date(text: str | None, option: str) -> datetime | None:
    if text is None:
        return None
    return as_utc(parse_cli_date(text, pendulum.UTC, option=option), pendulum.UTC)


TaskCounts = dict[str, dict[TIState, int]]


def _select_tasks(conn: Connection, query: _TasksQuery) -> tuple[status.TaskFilter, TaskCounts]:
    """The matching TIs counted by task and state; with `--task-regex`, narrowed to the
    tasks it matches, in Python: the same `re.search` as `run --task-regex`, whatever
    the database's own regex dialect, over the backfill's task ids (a few hundred)."""
    counts = status.task_counts(conn, query.backfill_id, query.where)
    if query.regex is None:
        return query.where, counts
    regex = re.compile(query.regex)
    counts = {task_id: n for task_id, n in counts.items() if regex.search(task_id)}
    return dataclasses.replace(query.where, task_ids=frozenset(counts)), counts


def _tasks_json(conn: Connection, query: _TasksQuery, *, jsonl: bool) -> None:
    """Stream the page; one row past it, if read, only says that more match (on stderr)."""
    where = query.where if query.regex is None else _select_tasks(conn, query)[0]
    limit, offset = query.limit, query.offset
    rows = status.task_rows(
        conn, query.backfill_id, where, limit=None if limit is None else limit + 1, offset=offset
    )
    emit = emit_jsonl if jsonl else emit_json_array
    emit(task_json_text(row) for row in itertools.islice(rows, limit))
    if limit is not None and next(rows, None) is not None:
        warn(
            f"more TIs match than the {limit} written from offset {offset}; use --offset "
            f"{offset + limit} for the next ones, --limit 0 or -o jsonl for all"
        )


def _tasks_table(conn: Connection, query: _TasksQuery) -> None:
    """Counts by task and state, then a page of TIs, then which rows were shown."""
    where, counts = _select_tasks(conn, query)
    total = sum(n for by_state in counts.values() for n in by_state.values())
    if total == 0:
        matching = f" matching {query.asked}" if query.asked else ""
        click.echo(f"backfill {query.backfill_id} has no task instances{matching}")
        return
    console().print(_counts_table(counts))
    rows = status.task_rows(conn, query.backfill_id, where, limit=query.limit, offset=query.offset)
    shown = _print_tis(rows)
    if shown < total:
        hint = "--offset/--limit, --state, --task-regex, -s/-e"
        click.echo(_showing("TIs", query.offset, shown, total, hint))


def _counts_table(counts: TaskCounts) -> Table:
    present = [s for s in TIState if any(s in by_state for by_state in counts.values())]
    tbl = table(
        "task_id", *(s.value for s in present), "total", title="Task instances by task and state"
    )
    for column in tbl.columns[1:]:
        column.justify = "right"
    for task_id, by_state in counts.items():
        tbl.add_row(task_id, *_count_cells(by_state, present))
    tbl.add_section()
    overall: collections.Counter[TIState] = collections.Counter()
    for by_state in counts.values():
        overall.update(by_state)
    tbl.add_row(
        f"{len(counts)} task{'' if len(counts) == 1 else 's'}", *_count_cells(overall, present)
    )
    return tbl


def _count_cells(by_state: Mapping[TIState, int], present: list[TIState]) -> list[str]:
    return [str(by_state.get(s) or "-") for s in present] + [str(sum(by_state.values()))]


def _print_tis(rows: Iterator[TaskRow]) -> int:
    """Print `rows` as tables of `_TABLE_CHUNK` rows (rich lays out a whole table in
    memory); how many were printed."""
    shown = 0
    while chunk := list(itertools.islice(rows, _TABLE_CHUNK)):
        tbl = table("logical date", "task_id", "state", "try", "hostname", "start", "end", "error")
        for row in chunk:
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
        shown += len(chunk)
    return shown


def task_json_text(row: TaskRow) -> str:
    """`row` as one compact JSON object: DESIGN's keys (section 4), then max_tries, pool
    and last_error. Written as text rather than `json.dumps` of a dict, which costs a
    third more CPU a row: a stream of 440k rows feels it. Strings are escaped by
    `json`'s own encoder; numbers, dates and states need no escaping."""
    return (
        f'{{"dag_id": {_text(row.dag_id)}, "task_id": {_text(row.task_id)}, '
        f'"run_id": {_text(row.run_id)}, "logical_date": {_time(row.logical_date)}, '
        f'"state": "{row.state.value}", "try_number": {row.try_number}, '
        f'"max_tries": {row.max_tries}, "hostname": {_text(row.hostname)}, '
        f'"start_date": {_time(row.start_date)}, "end_date": {_time(row.end_date)}, '
        f'"pool": {_text(row.pool)}, "last_error": {_text(row.last_error)}}}'
    )


def _text(value: str | None) -> str:
    return "null" if value is None else encode_basestring(value)


def _time(moment: datetime | None) -> str:
    return "null" if moment is None else f'"{moment.isoformat()}"'
