"""Reads for progress and status reports (store): counts, never per-row loops.

Invariants:
- every report is read in ONE consistent snapshot (`reading`): REPEATABLE
  READ on PostgreSQL, a DEFERRED transaction on SQLite (WAL keeps the
  snapshot of its first read), so run and TI counts always agree with each
  other even while workers finish tasks;
- bounded at any backfill size: counts are aggregates (GROUP BY), never rows
  read to be counted; a listing is one statement, paged in SQL (LIMIT/OFFSET)
  and filtered in SQL; `task_rows` streams from a server-side cursor, so
  reading every TI of a year of hourly runs holds one batch in memory;
- a summary is three small statements; `list_backfills` counts the totals of
  the backfills it lists only;
- read-only commands never create the embedded database: `reading` yields
  None when it does not exist yet.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from backfill.config import Settings
from backfill.model.states import FINISHED, RUN_FINISHED, BackfillState, RunState, TIState
from backfill.store import db, reads
from backfill.store.schema import backfills, dag_runs, task_instances, ti_results

ti, run, bf = task_instances, dag_runs, backfills
_RUN_TIS = run.join(ti, ti.c.dag_run_id == run.c.id)  # a backfill's TIs, through its runs


@contextmanager
def reading(settings: Settings) -> Iterator[Connection | None]:
    """A read-only, consistent snapshot of the metadata DB; None if the embedded DB is absent."""
    engine = db.open_engine(settings, create=False)
    if engine is None:
        yield None
        return
    try:
        with reads.reading(engine) as conn:
            yield conn
    finally:
        engine.dispose()


@dataclass(frozen=True, kw_only=True)
class Summary:
    """One backfill with its runs and TIs counted by state."""

    id: int
    dag_id: str
    state: BackfillState
    start: datetime
    end: datetime
    options: dict[str, Any]
    conf: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    runs: dict[str, int]  # run state -> count
    task_instances: dict[str, int]  # TI state -> count
    lease_owner: str | None = None  # the coordinator driving it, if its lease is held
    lease_expires_at: datetime | None = None


def summary(conn: Connection, backfill_id: int) -> Summary | None:
    """The backfill and its counts (three small statements), or None if it does not exist."""
    row = conn.execute(sa.select(bf).where(bf.c.id == backfill_id)).one_or_none()
    if row is None:
        return None
    runs = conn.execute(
        sa.select(run.c.state, sa.func.count())
        .where(run.c.backfill_id == backfill_id)
        .group_by(run.c.state)
    ).all()
    tis = conn.execute(
        sa.select(ti.c.state, sa.func.count())
        .select_from(_RUN_TIS)
        .where(run.c.backfill_id == backfill_id)
        .group_by(ti.c.state)
    ).all()
    return Summary(
        id=row.id,
        dag_id=row.dag_id,
        state=BackfillState(row.state),
        start=row.start,
        end=row.end,
        options=row.options,
        conf=row.conf,
        created_at=row.created_at,
        updated_at=row.updated_at,
        runs={state: int(n) for state, n in runs},
        task_instances={state: int(n) for state, n in tis},
        lease_owner=row.lease_owner,
        lease_expires_at=row.lease_expires_at,
    )


_NEWEST_FIRST = (bf.c.created_at.desc(), bf.c.id.desc())


def latest_id(conn: Connection) -> int | None:
    """The id of the most recently created backfill; None if there is none."""
    stmt = sa.select(bf.c.id).order_by(*_NEWEST_FIRST).limit(1)
    found = conn.execute(stmt).scalar_one_or_none()
    return None if found is None else int(found)


@dataclass(frozen=True, kw_only=True)
class Listed:
    """One line of `backfill list`: the backfill and its progress totals."""

    id: int
    dag_id: str
    state: BackfillState
    start: datetime
    end: datetime
    created_at: datetime
    updated_at: datetime
    runs_total: int
    runs_finished: int
    task_instances_total: int
    task_instances_finished: int


def _finished(column: sa.ColumnElement[str], states: frozenset[Any]) -> sa.ColumnElement[int]:
    counted = sa.case((column.in_([s.value for s in states]), 1), else_=0)
    return sa.func.coalesce(sa.func.sum(counted), 0)


def _totals(of_tis: bool, backfill_ids: sa.Select[Any] | None) -> sa.Subquery:
    """Per backfill of `backfill_ids` (None: every one): how many runs (or TIs) it has,
    and how many of them are finished."""
    state, finished = (ti.c.state, FINISHED) if of_tis else (run.c.state, RUN_FINISHED)
    stmt = sa.select(
        run.c.backfill_id,
        sa.func.count().label("total"),
        _finished(state, finished).label("finished"),
    )
    if backfill_ids is not None:
        stmt = stmt.where(run.c.backfill_id.in_(backfill_ids))
    if of_tis:
        stmt = stmt.select_from(_RUN_TIS)
    return stmt.group_by(run.c.backfill_id).subquery()


_LISTED = ("id", "dag_id", "state", "start", "end", "created_at", "updated_at")


def _listed(state: BackfillState | None) -> sa.Select[Any]:
    stmt = sa.select(*(bf.c[name] for name in _LISTED))
    return stmt if state is None else stmt.where(bf.c.state == state.value)


def count_backfills(conn: Connection, state: BackfillState | None = None) -> int:
    """How many backfills `list_backfills` would give without a limit."""
    listed = _listed(state).subquery()
    return int(conn.execute(sa.select(sa.func.count()).select_from(listed)).scalar_one())


def list_backfills(
    conn: Connection,
    state: BackfillState | None = None,
    *,
    limit: int | None = None,
    offset: int = 0,
) -> list[Listed]:
    """The backfills (or those in `state`), newest first, at most `limit` (None: all)
    after skipping `offset`, with their totals: ONE statement. A page counts the
    totals of its own backfills only, so it costs what their TIs cost; the whole
    list counts every TI once, with no filter to apply."""
    page = _listed(state).order_by(*_NEWEST_FIRST).limit(limit).offset(offset or None).cte("page")
    ids = None if limit is None and not offset else sa.select(page.c.id)
    runs, tis = _totals(of_tis=False, backfill_ids=ids), _totals(of_tis=True, backfill_ids=ids)
    stmt = (
        sa.select(
            *(page.c[name] for name in _LISTED),
            sa.func.coalesce(runs.c.total, 0).label("runs_total"),
            sa.func.coalesce(runs.c.finished, 0).label("runs_finished"),
            sa.func.coalesce(tis.c.total, 0).label("task_instances_total"),
            sa.func.coalesce(tis.c.finished, 0).label("task_instances_finished"),
        )
        .select_from(
            page.outerjoin(runs, runs.c.backfill_id == page.c.id).outerjoin(
                tis, tis.c.backfill_id == page.c.id
            )
        )
        .order_by(page.c.created_at.desc(), page.c.id.desc())
    )
    return [
        Listed(**{**row._asdict(), "state": BackfillState(row.state)}) for row in conn.execute(stmt)
    ]


class TaskRow(NamedTuple):
    """One task instance of a backfill, as `backfill tasks` shows it. A tuple, in the
    order of `_TASK_COLUMNS`: cheap to build, as a stream of 440k of them needs."""

    state: TIState
    dag_id: str
    task_id: str
    run_id: str
    logical_date: datetime
    try_number: int
    max_tries: int
    pool: str
    hostname: str | None
    start_date: datetime | None
    end_date: datetime | None
    last_error: str | None
    result: str | None  # its return value as JSON text, while it is success at that try
    map_index: int  # a mapped task's element; -1: not mapped (or its placeholder)


@dataclass(frozen=True, kw_only=True)
class TaskFilter:
    """Which TIs of a backfill to read: every field given narrows, the defaults keep all."""

    states: frozenset[TIState] = frozenset()  # empty: any state
    task_ids: frozenset[str] | None = None  # None: any task; empty: none
    start: datetime | None = None  # logical dates >= start (aware)
    end: datetime | None = None  # logical dates <= end, inclusive (aware)
    map_index: int | None = None  # None: any map index


EVERY_TI = TaskFilter()
STREAM_BATCH = 5000  # rows a streamed read holds at a time


def exists(conn: Connection, backfill_id: int) -> bool:
    """Whether backfill `backfill_id` exists: an empty listing is then an answer."""
    stmt = sa.select(bf.c.id).where(bf.c.id == backfill_id)
    return conn.execute(stmt).first() is not None


def _ti_conditions(backfill_id: int, where: TaskFilter) -> list[sa.ColumnElement[bool]]:
    conditions = [run.c.backfill_id == backfill_id]
    if where.states:
        conditions.append(ti.c.state.in_(sorted(s.value for s in where.states)))
    if where.task_ids is not None:  # a few hundred ids at most: one per task of the DAG
        conditions.append(ti.c.task_id.in_(sorted(where.task_ids)))
    if where.start is not None:
        conditions.append(run.c.logical_date >= where.start)
    if where.end is not None:
        conditions.append(run.c.logical_date <= where.end)
    if where.map_index is not None:
        conditions.append(ti.c.map_index == where.map_index)
    return conditions


def task_counts(
    conn: Connection, backfill_id: int, where: TaskFilter = EVERY_TI
) -> dict[str, dict[TIState, int]]:
    """task_id -> state -> how many of the matching TIs; tasks in creation (topological)
    order. ONE aggregate statement: its cost follows the TIs counted, its result the
    tasks of the DAG (a few hundred at most)."""
    first_ti = sa.func.min(sa.func.min(ti.c.id)).over(partition_by=ti.c.task_id)
    stmt = (
        sa.select(ti.c.task_id, ti.c.state, sa.func.count().label("n"))
        .select_from(_RUN_TIS)
        .where(*_ti_conditions(backfill_id, where))
        .group_by(ti.c.task_id, ti.c.state)
        .order_by(first_ti, ti.c.task_id)
    )
    counts: dict[str, dict[TIState, int]] = {}
    for task_id, state, n in conn.execute(stmt):
        counts.setdefault(task_id, {})[TIState(state)] = int(n)
    return counts


_TASK_COLUMNS = (
    ti.c.state,
    ti.c.dag_id,
    ti.c.task_id,
    run.c.run_id,
    run.c.logical_date,
    ti.c.try_number,
    ti.c.max_tries,
    ti.c.pool,
    ti.c.hostname,
    ti.c.start_date,
    ti.c.end_date,
    ti.c.last_error,
    ti_results.c.value,
    ti.c.map_index,
)  # TaskRow's fields, in its order
# A TI's visible result: the value its current try wrote, while it is success (`results`).
_WITH_RESULTS = _RUN_TIS.outerjoin(
    ti_results,
    sa.and_(
        ti_results.c.task_instance_id == ti.c.id,
        ti_results.c.try_number == ti.c.try_number,
        ti.c.state == TIState.SUCCESS.value,
    ),
)
_STATES = {s.value: s for s in TIState}  # a dict lookup: 20x cheaper than TIState(value)


def task_rows(
    conn: Connection,
    backfill_id: int,
    where: TaskFilter = EVERY_TI,
    *,
    limit: int | None = None,
    offset: int = 0,
) -> Iterator[TaskRow]:
    """The matching TIs by logical date, then creation (topological) order; at most
    `limit` (None: all) after skipping `offset`. ONE statement, STREAMED: on PostgreSQL
    from a server-side cursor, `STREAM_BATCH` rows at a time, so memory stays flat at
    any backfill size. Consume it inside the caller's transaction (`reading`).

    Hazard: the snapshot stays open while the stream is read, so a reader that stops
    reading (a paused pager) holds back PostgreSQL's vacuum of the rows workers update.
    Paging is LIMIT/OFFSET: a deep offset still reads the rows before it (0.3-0.9 s at
    offset 400,000); fine for an operator's paging, not for a loop over pages."""
    # Every run of a backfill is a run of its DAG. Saying so lets the unique index on
    # (dag_id, logical_date) hand the runs over in date order, so a page reads its own
    # rows (1 ms at 440k TIs), not every TI to sort them (200 ms). The DAG comes from a
    # subquery whose value the planner cannot see: it expects few runs, and plans the
    # fast-start nested loop a page and a stream want (not the aggregates: they count all).
    dag_id = sa.select(bf.c.dag_id).where(bf.c.id == backfill_id).scalar_subquery()
    stmt = (
        sa.select(*_TASK_COLUMNS)
        .select_from(_WITH_RESULTS)
        .where(run.c.dag_id == dag_id, *_ti_conditions(backfill_id, where))
        .order_by(run.c.logical_date, ti.c.id)  # a mapped task's TIs: placeholder, then 0, 1...
        .limit(limit)
        .offset(offset or None)
        .execution_options(yield_per=STREAM_BATCH)
    )
    for batch in conn.execute(stmt).partitions():
        for state, *rest in batch:
            yield TaskRow(_STATES[state], *rest)


def needing_a_driver(conn: Connection) -> dict[int, str]:
    """Backfill id -> dag_id of every backfill a coordinator must drive now: queued or
    running, or cancelled with runs not wound down yet. ONE statement that reads no TI,
    so a daemon's scan costs the same whatever the backfills' sizes."""
    unwound = sa.exists().where(
        run.c.backfill_id == bf.c.id,
        run.c.state.in_([RunState.QUEUED.value, RunState.RUNNING.value]),
    )
    driven = [BackfillState.QUEUED.value, BackfillState.RUNNING.value]
    stmt = sa.select(bf.c.id, bf.c.dag_id).where(
        sa.or_(
            bf.c.state.in_(driven),
            sa.and_(bf.c.state == BackfillState.CANCELLED.value, unwound),
        )
    )
    return {int(row.id): row.dag_id for row in conn.execute(stmt)}
