"""Reads for planning and reporting (store).

Contract of every function:
- it takes an explicit `Connection`; the caller owns the transaction (begin,
  commit, rollback) and decides what must be read consistently together;
- a read is one statement (or a fixed, small number of them), never one query
  per row: no N+1;
- a transition is one conditional statement naming the states it may come
  from; a miss is reported, never ignored.

Timestamps go in and come out as timezone-aware UTC datetimes (see
`backfill.store.schema.UTCDateTime`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from backfill.model.states import RunState, TIState
from backfill.planning.snapshot import ExistingRun
from backfill.store.schema import dag_runs, task_instances


@contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """A read-only transaction that sees one consistent snapshot. On SQLite it
    begins DEFERRED, not IMMEDIATE (see `backfill.store.db`): a reader takes no write
    lock and never waits for a writer; on PostgreSQL it is REPEATABLE READ.

    On PostgreSQL the transaction sets its own isolation, rather than the
    connection (`db.create_engine_for` says why a per-checkout setting is a hazard)."""
    if engine.dialect.name != "postgresql":
        with engine.connect().execution_options(sqlite_begin="DEFERRED") as conn, conn.begin():
            yield conn
        return
    with engine.connect() as conn, conn.begin():
        conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        yield conn


def existing_runs(
    conn: Connection, dag_id: str, logical_dates: Iterable[datetime]
) -> dict[datetime, ExistingRun]:
    """The runs of `dag_id` at any of `logical_dates`, keyed by the caller's own date objects.

    One statement: the runs left-joined to their TIs. It selects by the range
    of the dates rather than an IN list, which would hit the bind-parameter
    limits of the drivers for a long backfill; runs between the dates (e.g. a
    manual run at 13:37) are dropped here.
    """
    wanted = {_utc(d): d for d in logical_dates}
    if not wanted:
        return {}
    run, ti = dag_runs, task_instances
    stmt = (
        sa.select(
            run.c.logical_date,
            run.c.run_id,
            run.c.state,
            ti.c.task_id,
            ti.c.state.label("ti_state"),
        )
        .select_from(run.outerjoin(ti, ti.c.dag_run_id == run.c.id))
        .where(run.c.dag_id == dag_id, run.c.logical_date.between(min(wanted), max(wanted)))
        .order_by(run.c.logical_date, ti.c.task_id)
    )
    found: dict[datetime, tuple[str, RunState, dict[str, TIState]]] = {}
    for row in conn.execute(stmt):
        key = wanted.get(_utc(row.logical_date))
        if key is None:
            continue
        _, _, tis = found.setdefault(key, (row.run_id, RunState(row.state), {}))
        if row.task_id is not None:  # a run without TIs yet: the outer join's NULL row
            tis[row.task_id] = TIState(row.ti_state)
    return {key: ExistingRun(rid, state, tis) for key, (rid, state, tis) in found.items()}


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: logical dates are timezone-aware")
    utc = value.astimezone(UTC)
    # A plain datetime, whatever the input's class (pendulum), for exact dict matching.
    return datetime(
        utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second, utc.microsecond, UTC
    )
