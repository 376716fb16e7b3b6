"""Every read the bench makes of the metadata database, in one place.

The bench checks and times what the CLI did from the database itself, with
its own statements over the tables of `backfill.store.schema` (not the product's
store functions, which are free to change): they work on PostgreSQL and on
the embedded SQLite alike, except `relation_bytes` (PostgreSQL). All of them
only read; `benchmarks.fastforward` is the one module that writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from backfill.store.schema import backfills, dag_runs, task_instances

SIZED_TABLES = ("task_instances", "dag_runs", "ti_transitions", "backfills")

_ti, _run = task_instances, dag_runs


@dataclass(frozen=True)
class TIRow:
    task_id: str
    logical_date: datetime
    state: str
    try_number: int
    queued_at: datetime | None
    start_date: datetime | None
    end_date: datetime | None


def backfill_row(conn: Connection, backfill_id: int) -> tuple[str, datetime] | None:
    """(state, created_at) of the backfill, None if there is no such backfill."""
    stmt = sa.select(backfills.c.state, backfills.c.created_at).where(backfills.c.id == backfill_id)
    row = conn.execute(stmt).first()
    return None if row is None else (row.state, row.created_at)


def ti_rows(conn: Connection, backfill_id: int) -> list[TIRow]:
    """Every TI of the backfill, by logical date then task id."""
    stmt = (
        sa.select(
            _ti.c.task_id,
            _run.c.logical_date,
            _ti.c.state,
            _ti.c.try_number,
            _ti.c.queued_at,
            _ti.c.start_date,
            _ti.c.end_date,
        )
        .select_from(_ti.join(_run, _run.c.id == _ti.c.dag_run_id))
        .where(_run.c.backfill_id == backfill_id)
        .order_by(_run.c.logical_date, _ti.c.task_id)
    )
    return [TIRow(**row._asdict()) for row in conn.execute(stmt)]


def ended_between(conn: Connection, backfill_id: int, start: datetime, end: datetime) -> int:
    """TIs of the backfill that ended successfully in [start, end)."""
    stmt = (
        sa.select(sa.func.count())
        .select_from(_ti.join(_run, _run.c.id == _ti.c.dag_run_id))
        .where(
            _run.c.backfill_id == backfill_id,
            _ti.c.state == "success",
            _ti.c.end_date >= start,
            _ti.c.end_date < end,
        )
    )
    return int(conn.execute(stmt).scalar_one())


def ti_states(conn: Connection, backfill_id: int) -> dict[str, int]:
    """TIs of the backfill by state."""
    stmt = (
        sa.select(_ti.c.state, sa.func.count())
        .select_from(_ti.join(_run, _run.c.id == _ti.c.dag_run_id))
        .where(_run.c.backfill_id == backfill_id)
        .group_by(_ti.c.state)
    )
    return {state: int(n) for state, n in conn.execute(stmt).tuples()}


def run_states(conn: Connection, backfill_id: int) -> dict[str, int]:
    """Runs of the backfill by state."""
    stmt = (
        sa.select(_run.c.state, sa.func.count())
        .where(_run.c.backfill_id == backfill_id)
        .group_by(_run.c.state)
    )
    return {state: int(n) for state, n in conn.execute(stmt).tuples()}


def active_tis(conn: Connection, backfill_id: int) -> int:
    """TIs of the backfill's running runs (what a pass reads)."""
    stmt = (
        sa.select(sa.func.count())
        .select_from(_ti.join(_run, _run.c.id == _ti.c.dag_run_id))
        .where(_run.c.backfill_id == backfill_id, _run.c.state == "running")
    )
    return int(conn.execute(stmt).scalar_one())


def journal_per_ti(conn: Connection, backfill_id: int) -> list[tuple[str, str, int]]:
    """(from, to, TIs) of the journal of the backfill's successful TIs: a real history."""
    stmt = sa.text(
        """
        SELECT j.from_state, j.to_state, count(*)
        FROM ti_transitions j
        JOIN task_instances ti ON ti.id = j.task_instance_id
        JOIN dag_runs r ON r.id = ti.dag_run_id
        WHERE r.backfill_id = :backfill_id AND ti.state = 'success'
        GROUP BY j.from_state, j.to_state
        ORDER BY count(*) DESC
        """
    )
    rows = conn.execute(stmt, {"backfill_id": backfill_id}).tuples()
    return [(a, b, int(n)) for a, b, n in rows]


def relation_bytes(conn: Connection) -> dict[str, int]:
    """pg_total_relation_size (table, indexes, TOAST) of each of SIZED_TABLES (PostgreSQL)."""
    return {
        name: int(conn.execute(sa.text(f"SELECT pg_total_relation_size('{name}')")).scalar_one())
        for name in SIZED_TABLES
    }


def analyzed(conn: Connection) -> dict[str, str | None]:
    """When each of SIZED_TABLES was last analyzed, by anyone (PostgreSQL): the planner's
    statistics of a freshly created backfill may not exist yet."""
    stmt = sa.text(
        """
        SELECT relname, greatest(last_analyze, last_autoanalyze) FROM pg_stat_user_tables
        WHERE relname = ANY(:tables)
        """
    )
    rows = conn.execute(stmt, {"tables": list(SIZED_TABLES)}).tuples()
    return {name: None if at is None else at.isoformat() for name, at in rows}
