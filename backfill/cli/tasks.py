"""`backfill tasks ID`: the task instances of a backfill, filtered and paged.

Invariants:
- read only, from one consistent snapshot (`store.status.reading`);
- bounded at any backfill size: counts by task and state are aggregates;
  rows are filtered and paged in SQL. A table shows the counts, then one page
  (`TASKS_PAGE` TIs) and says which rows it showed when more match. `-o json`
  gives `TASKS_PAGE` TIs unless --limit says otherwise (`0`: all), and says on
  stderr when more match; `-o jsonl` gives every matching TI. JSON and JSONL
  stream from a server-side cursor: memory stays flat whatever the number of
  rows written;
- `-s/-e` read a date without an offset in UTC, not in the DAG's timezone
  (as `run` does): the dates shown are UTC, and `tasks` never loads DAG
  files, so it answers whatever the DAGs folder holds.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Iterator, Mapping

import click
from rich.table import Table
from sqlalchemy.engine import Connection

from backfill.cli.output import (
    BACKFILL_ID,
    OutputFormat,
    console,
    emit_json_array,
    emit_jsonl,
    streaming_output_option,
    table,
    warn,
    when,
)
from backfill.cli.paging import page_limit, paging_options, showing
from backfill.client.shapes import task_json_text
from backfill.client.tasks import (
    TaskCounts,
    TasksQuery,
    check_regex,
    page_rows,
    select_tasks,
    tasks_query,
)
from backfill.config import Settings
from backfill.errors import UserError
from backfill.model.states import TIState
from backfill.store import status
from backfill.store.errors import BackfillNotFound
from backfill.store.status import TaskRow

TASKS_PAGE = 100  # TIs `tasks` shows (table or JSON) unless --limit says otherwise
_RESULT_SHOWN = 60  # characters of a TI's result in the table
_TABLE_CHUNK = 1000  # TI rows per rendered table: rich lays a whole table out in memory


def _task_regex(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    try:
        return check_regex(value)
    except UserError as exc:
        raise click.BadParameter(str(exc).removeprefix("--task-regex: ")) from None


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
@paging_options("matching TIs", defaults=f"{TASKS_PAGE}, all with -o jsonl")
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
    query = tasks_query(
        backfill_id,
        states=states,
        task_regex=task_regex,
        start=start,
        end=end,
        limit=page_limit(limit, None if output is OutputFormat.JSONL else TASKS_PAGE),
        offset=offset,
    )
    with status.reading(Settings.from_env()) as conn:
        if conn is None or not status.exists(conn, backfill_id):
            raise BackfillNotFound(backfill_id)
        if output is OutputFormat.TABLE:
            _tasks_table(conn, query)
        else:
            _tasks_json(conn, query, jsonl=output is OutputFormat.JSONL)


def _tasks_json(conn: Connection, query: TasksQuery, *, jsonl: bool) -> None:
    """Stream the page; one row past it, if read, only says that more match (on stderr)."""
    limit, offset = query.limit, query.offset
    rows = page_rows(conn, query, one_more=True)
    emit = emit_jsonl if jsonl else emit_json_array
    emit(task_json_text(row) for row in itertools.islice(rows, limit))
    if limit is not None and next(rows, None) is not None:
        warn(
            f"more TIs match than the {limit} written from offset {offset}; use --offset "
            f"{offset + limit} for the next ones, --limit 0 or -o jsonl for all"
        )


def _tasks_table(conn: Connection, query: TasksQuery) -> None:
    """Counts by task and state, then a page of TIs, then which rows were shown."""
    where, counts = select_tasks(conn, query)
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
        click.echo(showing("TIs", query.offset, shown, total, hint))


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


def _shown(result: str | None) -> str:
    """A result in a table cell: its JSON, cut to `_RESULT_SHOWN` characters (JSON has all)."""
    if result is None:
        return ""
    return result if len(result) <= _RESULT_SHOWN else result[: _RESULT_SHOWN - 3] + "..."


def _print_tis(rows: Iterator[TaskRow]) -> int:
    """Print `rows` as tables of `_TABLE_CHUNK` rows (rich lays out a whole table in
    memory); how many were printed."""
    shown = 0
    while chunk := list(itertools.islice(rows, _TABLE_CHUNK)):
        tbl = table(
            "logical date", "task_id", "state", "try", "hostname", "start", "end", "result / error"
        )
        for row in chunk:
            tbl.add_row(
                when(row.logical_date),
                row.task_id if row.map_index < 0 else f"{row.task_id}[{row.map_index}]",
                row.state.value,
                f"{row.try_number}/{row.max_tries + 1}",
                row.hostname or "-",
                when(row.start_date),
                when(row.end_date),
                row.last_error or _shown(row.result),
            )
        console().print(tbl)
        shown += len(chunk)
    return shown
