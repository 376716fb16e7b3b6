"""The task instances of a backfill, filtered and paged: `backfill tasks` and
`GET /api/v1/backfills/{id}/task_instances`.

Invariants:
- read only, in the caller's snapshot; bounded at any backfill size: counts
  by task and state are aggregates, rows are filtered and paged in SQL and
  streamed from a server-side cursor;
- `start`/`end` read a date without an offset in UTC, not in the DAG's
  timezone (as `run` does): the dates shown are UTC, and `tasks` never loads
  DAG files, so it answers whatever the DAGs folder holds;
- `task_regex` is the same `re.search` as `run --task-regex`, applied in
  Python over the backfill's task ids (a few hundred), whatever the
  database's own regex dialect.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

import pendulum
from sqlalchemy.engine import Connection

from backfill.errors import UserError
from backfill.model.dates import as_utc, parse_cli_date
from backfill.model.errors import BadRange
from backfill.model.states import TIState
from backfill.store import status
from backfill.store.status import TaskRow

TaskCounts = dict[str, dict[TIState, int]]
_STATES = frozenset(s.value for s in TIState)


@dataclass(frozen=True, kw_only=True)
class TasksQuery:
    """What was asked for, parsed and checked."""

    backfill_id: int
    where: status.TaskFilter
    regex: str | None  # resolved to `where.task_ids` against the backfill's tasks
    limit: int | None  # None: every matching TI
    offset: int
    asked: str  # the filters as typed, to say what matched nothing


def check_regex(value: str | None) -> str | None:
    """`value`, if it is a regular expression; else a `UserError` saying why not."""
    if value is not None:
        try:
            re.compile(value)
        except re.error as exc:
            raise UserError(f"--task-regex: {value!r} is not a regular expression: {exc}") from None
    return value


def tasks_query(
    backfill_id: int,
    *,
    states: Sequence[str] = (),
    task_regex: str | None = None,
    start: str | None = None,
    end: str | None = None,
    limit: int | None,
    offset: int = 0,
) -> TasksQuery:
    """The query, or a `UserError` naming the filter that is wrong. `limit` None: all."""
    unknown = [s for s in states if s not in _STATES]
    if unknown:
        choices = ", ".join(s.value for s in TIState)
        raise UserError(f"--state {unknown[0]!r} is not a state; the states: {choices}")
    if (limit is not None and limit < 0) or offset < 0:
        raise UserError(f"--limit and --offset must be >= 0, got {limit} and {offset}")
    check_regex(task_regex)
    first, last = _logical_date(start, "--start-date"), _logical_date(end, "--end-date")
    if first is not None and last is not None and first > last:
        raise BadRange(f"--start-date {start} is after --end-date {end}: no date can match")
    asked = [f"--state {s}" for s in states] + [
        f"{name} {value!r}"
        for name, value in (("--task-regex", task_regex), ("-s", start), ("-e", end))
        if value is not None
    ]
    return TasksQuery(
        backfill_id=backfill_id,
        where=status.TaskFilter(states=frozenset(map(TIState, states)), start=first, end=last),
        regex=task_regex,
        limit=limit,
        offset=offset,
        asked=" ".join(asked),
    )


def _logical_date(text: str | None, option: str) -> datetime | None:
    if text is None:
        return None
    return as_utc(parse_cli_date(text, pendulum.UTC, option=option), pendulum.UTC)


def select_tasks(conn: Connection, query: TasksQuery) -> tuple[status.TaskFilter, TaskCounts]:
    """The matching TIs counted by task and state; with a regex, narrowed to the tasks it
    matches."""
    counts = status.task_counts(conn, query.backfill_id, query.where)
    if query.regex is None:
        return query.where, counts
    regex = re.compile(query.regex)
    counts = {task_id: n for task_id, n in counts.items() if regex.search(task_id)}
    return dataclasses.replace(query.where, task_ids=frozenset(counts)), counts


def page_rows(conn: Connection, query: TasksQuery, *, one_more: bool = False) -> Iterator[TaskRow]:
    """The page's rows, streamed; `one_more` reads one row past the page, which says
    that more match."""
    where = query.where if query.regex is None else select_tasks(conn, query)[0]
    limit = query.limit
    if limit is not None and one_more:
        limit += 1
    return status.task_rows(conn, query.backfill_id, where, limit=limit, offset=query.offset)
