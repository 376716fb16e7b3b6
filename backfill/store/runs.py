"""Backfills, DAG runs and the coordinator lease. (store)

Creating a backfill writes its row, its runs (state `queued`) and their TIs
in the caller's transaction; the coordinator then starts runs in a rolling
window. `lock_backfill` serialises passes over one backfill across
coordinators, so run starts and finishes never race; the lease only says
which coordinator is expected to drive (safety never depends on it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from backfill.schema import backfills, dag_runs, task_instances
from backfill.snapshot import LimitCounts, RunRow, Snapshot, TIRow
from backfill.states import FAILED_STATES, BackfillState, RunState, TIState

ti, run, bf = task_instances, dag_runs, backfills


@dataclass(frozen=True, kw_only=True)
class NewRun:
    run_id: str
    logical_date: datetime
    data_interval_start: datetime
    data_interval_end: datetime


@dataclass(frozen=True, kw_only=True)
class TaskSpec:
    """What a TI row copies from its task's options when created."""

    task_id: str
    pool: str
    pool_slots: int
    queue: str
    priority_weight: int
    max_tries: int


@dataclass(frozen=True, kw_only=True)
class BackfillRow:
    id: int
    dag_id: str
    dag_fingerprint: str
    state: BackfillState
    start: datetime
    end: datetime
    options: dict[str, Any]
    conf: dict[str, Any]
    lease_owner: str | None
    lease_epoch: int
    lease_expires_at: datetime | None


def insert_backfill(
    conn: Connection,
    *,
    dag_id: str,
    fingerprint: str,
    start: datetime,
    end: datetime,
    options: dict[str, Any],
    conf: dict[str, Any],
    now: datetime,
) -> int:
    stmt = (
        sa.insert(bf)
        .values(
            dag_id=dag_id,
            dag_fingerprint=fingerprint,
            start=start,
            end=end,
            state=BackfillState.QUEUED.value,
            options=options,
            conf=conf,
            created_at=now,
            updated_at=now,
        )
        .returning(bf.c.id)
    )
    return int(conn.execute(stmt).scalar_one())


def insert_runs(
    conn: Connection,
    *,
    backfill_id: int,
    dag_id: str,
    runs: Sequence[NewRun],
    tasks: Sequence[TaskSpec],
    conf: dict[str, Any],
    now: datetime,
) -> list[int]:
    """Create `runs` (queued) and one TI per task in each (state none): two batched statements."""
    if not runs:
        return []
    rows = [
        {
            "dag_id": dag_id,
            "run_id": r.run_id,
            "logical_date": r.logical_date,
            "data_interval_start": r.data_interval_start,
            "data_interval_end": r.data_interval_end,
            "backfill_id": backfill_id,
            "state": RunState.QUEUED.value,
            "conf": conf,
            "created_at": now,
            "updated_at": now,
        }
        for r in runs
    ]
    result = conn.execute(sa.insert(run).returning(run.c.id, sort_by_parameter_order=True), rows)
    run_ids = [int(row.id) for row in result]
    insert_tis(conn, dag_id=dag_id, run_ids=run_ids, tasks=tasks, now=now)
    return run_ids


def insert_tis(
    conn: Connection,
    *,
    dag_id: str,
    run_ids: Iterable[int],
    tasks: Sequence[TaskSpec],
    now: datetime,
) -> None:
    rows = [
        {
            "dag_run_id": run_id,
            "dag_id": dag_id,
            "task_id": t.task_id,
            "state": TIState.NONE.value,
            "try_number": 0,
            "max_tries": t.max_tries,
            "pool": t.pool,
            "pool_slots": t.pool_slots,
            "queue": t.queue,
            "priority_weight": t.priority_weight,
            "updated_at": now,
            "updated_by": "coordinator",
        }
        for run_id in run_ids
        for t in tasks
    ]
    if rows:
        conn.execute(sa.insert(ti), rows)


def lock_backfill(conn: Connection, backfill_id: int) -> BackfillRow | None:
    """Read the backfill row, locking it (PostgreSQL) until the transaction ends."""
    stmt = sa.select(bf).where(bf.c.id == backfill_id)
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    row = conn.execute(stmt).one_or_none()
    return None if row is None else _backfill_row(row)


def _backfill_row(row: Any) -> BackfillRow:
    return BackfillRow(
        id=row.id,
        dag_id=row.dag_id,
        dag_fingerprint=row.dag_fingerprint,
        state=BackfillState(row.state),
        start=row.start,
        end=row.end,
        options=row.options,
        conf=row.conf,
        lease_owner=row.lease_owner,
        lease_epoch=row.lease_epoch,
        lease_expires_at=row.lease_expires_at,
    )


def read_snapshot(conn: Connection, backfill_id: int, limits: LimitCounts) -> Snapshot:
    """Every TI of the backfill's running runs, in ONE statement, plus the run backlog.

    `removed` TIs are left out: their task is no longer in the DAG the planner has.
    """
    stmt = (
        sa.select(
            run.c.id.label("run_pk"),
            run.c.run_id,
            run.c.logical_date,
            run.c.state.label("run_state"),
            ti.c.id,
            ti.c.task_id,
            ti.c.state,
            ti.c.try_number,
            ti.c.max_tries,
            ti.c.pool,
            ti.c.pool_slots,
            ti.c.priority_weight,
            ti.c.next_try_at,
        )
        .select_from(run.join(ti, ti.c.dag_run_id == run.c.id))
        .where(
            run.c.backfill_id == backfill_id,
            run.c.state == RunState.RUNNING.value,
            ti.c.state != TIState.REMOVED.value,
        )
        .order_by(run.c.logical_date, ti.c.id)
    )
    runs: dict[int, RunRow] = {}
    tis: list[TIRow] = []
    for r in conn.execute(stmt):
        runs.setdefault(
            r.run_pk,
            RunRow(
                id=r.run_pk,
                run_id=r.run_id,
                logical_date=r.logical_date,
                state=RunState(r.run_state),
            ),
        )
        tis.append(
            TIRow(
                id=r.id,
                run_id=r.run_pk,
                task_id=r.task_id,
                state=TIState(r.state),
                try_number=r.try_number,
                max_tries=r.max_tries,
                pool=r.pool,
                pool_slots=r.pool_slots,
                priority_weight=r.priority_weight,
                next_try_at=r.next_try_at,
            )
        )
    backlog = conn.execute(_backlog(backfill_id)).one()
    return Snapshot(
        runs=tuple(runs.values()),
        tis=tuple(tis),
        queued_runs=int(backlog[0]),
        limits=limits,
        earlier_failures=bool(backlog[1]),
    )


def _backlog(backfill_id: int) -> sa.Select[int, bool]:
    """One statement: the runs not started yet, and whether a run no longer running had a
    failed TI (which the snapshot of the running runs cannot show)."""
    queued = (
        sa.select(sa.func.count())
        .where(run.c.backfill_id == backfill_id, run.c.state == RunState.QUEUED.value)
        .scalar_subquery()
    )
    failed = (
        sa.select(ti.c.id)
        .select_from(ti.join(run, ti.c.dag_run_id == run.c.id))
        .where(
            run.c.backfill_id == backfill_id,
            run.c.state != RunState.RUNNING.value,
            ti.c.state.in_([s.value for s in FAILED_STATES]),
        )
    )
    return sa.select(queued, sa.exists(failed))


def start_runs(
    conn: Connection, backfill_id: int, count: int, *, backwards: bool, now: datetime
) -> int:
    """Start the next `count` queued runs (oldest first, newest with `backwards`)."""
    if count <= 0:
        return 0
    order = run.c.logical_date.desc() if backwards else run.c.logical_date
    nxt = (
        sa.select(run.c.id)
        .where(run.c.backfill_id == backfill_id, run.c.state == RunState.QUEUED.value)
        .order_by(order)
        .limit(count)
        .scalar_subquery()
    )
    stmt = (
        sa.update(run)
        .where(run.c.id.in_(nxt), run.c.state == RunState.QUEUED.value)
        .values(state=RunState.RUNNING.value, start_date=now, updated_at=now)
    )
    return conn.execute(stmt).rowcount


def finish_runs(
    conn: Connection, outcomes: Sequence[tuple[int, RunState]], *, now: datetime
) -> int:
    """Finish running runs: one statement per outcome state."""
    changed = 0
    for state in (RunState.SUCCESS, RunState.FAILED):
        ids = [run_id for run_id, outcome in outcomes if outcome is state]
        if ids:
            stmt = (
                sa.update(run)
                .where(run.c.id.in_(ids), run.c.state == RunState.RUNNING.value)
                .values(state=state.value, end_date=now, updated_at=now)
            )
            changed += conn.execute(stmt).rowcount
    return changed


def set_backfill_state(
    conn: Connection,
    backfill_id: int,
    state: BackfillState,
    *,
    expected: Iterable[BackfillState],
    now: datetime,
) -> bool:
    stmt = (
        sa.update(bf)
        .where(bf.c.id == backfill_id, bf.c.state.in_([s.value for s in expected]))
        .values(state=state.value, updated_at=now)
    )
    return conn.execute(stmt).rowcount == 1


def acquire_lease(
    conn: Connection, backfill_id: int, *, owner: str, now: datetime, ttl: timedelta
) -> int | None:
    """Take or renew the driver lease; the new epoch, or None while another holds it."""
    free = sa.or_(
        bf.c.lease_owner.is_(None), bf.c.lease_expires_at < now, bf.c.lease_owner == owner
    )
    stmt = (
        sa.update(bf)
        .where(bf.c.id == backfill_id, free)
        .values(
            lease_owner=owner,
            lease_epoch=sa.case(
                (bf.c.lease_owner == owner, bf.c.lease_epoch), else_=bf.c.lease_epoch + 1
            ),
            lease_expires_at=now + ttl,
        )
        .returning(bf.c.lease_epoch)
    )
    epoch = conn.execute(stmt).scalar_one_or_none()
    return None if epoch is None else int(epoch)


def release_lease(conn: Connection, backfill_id: int, *, owner: str) -> None:
    conn.execute(
        sa.update(bf)
        .where(bf.c.id == backfill_id, bf.c.lease_owner == owner)
        .values(lease_owner=None, lease_expires_at=None)
    )
