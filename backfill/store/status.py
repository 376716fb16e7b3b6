"""Reads for progress and status reports (store): counts, never per-row loops.

Invariants:
- every report is read in ONE consistent snapshot (`reading`): REPEATABLE
  READ on PostgreSQL, a DEFERRED transaction on SQLite (WAL keeps the
  snapshot of its first read), so run and TI counts always agree with each
  other even while workers finish tasks;
- a listing is one statement (`list_backfills`, `task_instances`); a summary
  is three small ones in that snapshot;
- read-only commands never create the embedded database: `reading` yields
  None when it does not exist yet.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from backfill import db
from backfill.config import Settings
from backfill.errors import UserError
from backfill.schema import backfills, dag_runs, task_instances
from backfill.states import FINISHED, RUN_FINISHED, BackfillState, TIState
from backfill.store import reads

ti, run, bf = task_instances, dag_runs, backfills


class BackfillNotFound(UserError):
    """No backfill has the id the user gave."""

    def __init__(self, backfill_id: int) -> None:
        super().__init__(f"no backfill with id {backfill_id}; see `backfill list`")


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
        .select_from(ti.join(run, ti.c.dag_run_id == run.c.id))
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


def _totals(of_tis: bool) -> sa.Subquery:
    """Per backfill: how many runs (or TIs) it has, and how many of them are finished."""
    state, finished = (ti.c.state, FINISHED) if of_tis else (run.c.state, RUN_FINISHED)
    stmt = sa.select(
        run.c.backfill_id,
        sa.func.count().label("total"),
        _finished(state, finished).label("finished"),
    )
    if of_tis:
        stmt = stmt.select_from(ti.join(run, ti.c.dag_run_id == run.c.id))
    return stmt.group_by(run.c.backfill_id).subquery()


def list_backfills(conn: Connection, state: BackfillState | None = None) -> list[Listed]:
    """Every backfill (or those in `state`), newest first, with totals: ONE statement."""
    runs, tis = _totals(of_tis=False), _totals(of_tis=True)
    stmt = (
        sa.select(
            *(bf.c[name] for name in ("id", "dag_id", "state", "start", "end")),
            bf.c.created_at,
            bf.c.updated_at,
            sa.func.coalesce(runs.c.total, 0).label("runs_total"),
            sa.func.coalesce(runs.c.finished, 0).label("runs_finished"),
            sa.func.coalesce(tis.c.total, 0).label("task_instances_total"),
            sa.func.coalesce(tis.c.finished, 0).label("task_instances_finished"),
        )
        .select_from(
            bf.outerjoin(runs, runs.c.backfill_id == bf.c.id).outerjoin(
                tis, tis.c.backfill_id == bf.c.id
            )
        )
        .order_by(*_NEWEST_FIRST)
    )
    if state is not None:
        stmt = stmt.where(bf.c.state == state.value)
    return [
        Listed(**{**row._asdict(), "state": BackfillState(row.state)}) for row in conn.execute(stmt)
    ]


@dataclass(frozen=True, kw_only=True)
class TaskRow:
    """One task instance of a backfill, as `backfill tasks` shows it."""

    dag_id: str
    task_id: str
    run_id: str
    logical_date: datetime
    state: TIState
    try_number: int
    max_tries: int
    pool: str
    hostname: str | None
    start_date: datetime | None
    end_date: datetime | None
    last_error: str | None


_TASK_COLUMNS = (
    ti.c.dag_id,
    ti.c.task_id,
    run.c.run_id,
    run.c.logical_date,
    ti.c.state,
    ti.c.try_number,
    ti.c.max_tries,
    ti.c.pool,
    ti.c.hostname,
    ti.c.start_date,
    ti.c.end_date,
    ti.c.last_error,
)  # named as TaskRow's fields


def task_rows(
    conn: Connection, backfill_id: int, state: TIState | None = None
) -> list[TaskRow] | None:
    """The backfill's TIs (or those in `state`) by logical date, then creation order
    (topological); None if the backfill does not exist. ONE statement: the backfill
    row is outer-joined to its TIs, so an unknown id and an empty result differ."""
    on = run.c.backfill_id == bf.c.id
    if state is not None:
        on = sa.and_(on, ti.c.state == state.value)
    stmt = (
        sa.select(ti.c.id.label("ti_pk"), *_TASK_COLUMNS)
        .select_from(bf.outerjoin(run.join(ti, ti.c.dag_run_id == run.c.id), on))
        .where(bf.c.id == backfill_id)
        .order_by(run.c.logical_date, ti.c.id)
    )
    rows = conn.execute(stmt).all()
    if not rows:
        return None
    # A NULL `ti_pk` is the outer join's row of a backfill without (matching) TIs.
    return [_task_row(row._asdict()) for row in rows if row.ti_pk is not None]


def _task_row(values: Mapping[str, Any]) -> TaskRow:
    fields = {name: value for name, value in values.items() if name != "ti_pk"}
    return TaskRow(**{**fields, "state": TIState(fields["state"])})
