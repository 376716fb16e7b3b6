"""Backfills and DAG runs: creation, run starts and finishes. (store)

Creating a backfill writes its row, its runs (state `queued`) and their TIs
in the caller's transaction; the coordinator then starts runs in a rolling
window of `max_active_runs`, held DAG-wide (`start_runs`). `lock_backfill`
serialises passes over one backfill across coordinators, so run starts and
finishes never race; the lease only says which coordinator is expected to
drive (safety never depends on it; see `store.lease`). The pass's one
snapshot is read by `store.snapshot`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from backfill.model.states import BackfillState, RunState, TIState, source, sources_of
from backfill.store.schema import backfills, dag_runs, task_instances
from backfill.store.tis import lock_dag

ti, run, bf = task_instances, dag_runs, backfills
_R = RunState
_STARTABLE = source(_R.QUEUED, _R.RUNNING).value
_FINISHABLE = source(_R.RUNNING, _R.SUCCESS, _R.FAILED).value


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


RUN_BATCH = 2000  # runs per INSERT: the rows in memory at once, whatever the backfill's size


def insert_runs(
    conn: Connection,
    *,
    backfill_id: int,
    dag_id: str,
    runs: Iterable[NewRun],
    tasks: Sequence[TaskSpec],
    conf: dict[str, Any],
    now: datetime,
) -> list[int]:
    """Create `runs` (queued) and one TI per task in each (state none); the runs' ids.

    Bounded memory: runs go in batches of RUN_BATCH, and their TIs are made by
    the database (`_insert_tis`), never as rows in Python.
    """
    dag_run_ids: list[int] = []
    pending = iter(runs)
    while batch := list(itertools.islice(pending, RUN_BATCH)):
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
            for r in batch
        ]
        stmt = sa.insert(run).returning(run.c.id, sort_by_parameter_order=True)
        dag_run_ids.extend(int(row.id) for row in conn.execute(stmt, rows))
    if dag_run_ids:
        # Ids come from one sequence and this transaction alone writes the
        # backfill's runs: its runs in [first, last] are exactly the new ones.
        new = sa.select(run.c.id).where(
            run.c.backfill_id == backfill_id, run.c.id.between(min(dag_run_ids), max(dag_run_ids))
        )
        _insert_tis(conn, dag_id=dag_id, runs=new, tasks=tasks, now=now)
    return dag_run_ids


def insert_tis(
    conn: Connection,
    *,
    dag_id: str,
    dag_run_ids: Sequence[int],
    tasks: Sequence[TaskSpec],
    now: datetime,
) -> None:
    """One TI per task in each of `dag_run_ids` (state none)."""
    if dag_run_ids:
        runs = sa.select(run.c.id).where(run.c.id.in_(dag_run_ids))
        _insert_tis(conn, dag_id=dag_id, runs=runs, tasks=tasks, now=now)


def _insert_tis(
    conn: Connection,
    *,
    dag_id: str,
    runs: sa.Select[tuple[int]],
    tasks: Sequence[TaskSpec],
    now: datetime,
) -> None:
    """For each task, in order, ONE `INSERT ... SELECT` of its TI in every run `runs` names:
    the database makes the rows, and a run's TI ids follow the task order."""
    picked = runs.subquery()
    columns = ["dag_run_id", "dag_id", "task_id", "state", "try_number", "max_tries", "pool"]
    columns += ["pool_slots", "queue", "priority_weight", "updated_at", "updated_by"]
    for t in tasks:
        values = (
            picked.c.id,
            sa.literal(dag_id, ti.c.dag_id.type),
            sa.literal(t.task_id, ti.c.task_id.type),
            sa.literal(TIState.NONE.value, ti.c.state.type),
            sa.literal(0),
            sa.literal(t.max_tries),
            sa.literal(t.pool, ti.c.pool.type),
            sa.literal(t.pool_slots),
            sa.literal(t.queue, ti.c.queue.type),
            sa.literal(t.priority_weight),
            sa.literal(now, ti.c.updated_at.type),
            sa.literal("coordinator", ti.c.updated_by.type),
        )
        select = sa.select(*values).order_by(picked.c.id)
        conn.execute(sa.insert(ti).from_select(columns, select))


_READ_BACKFILL = sa.select(bf).where(bf.c.id == sa.bindparam("p_id"))
_LOCK_BACKFILL = _READ_BACKFILL.with_for_update()  # built once: every pass starts with it


def lock_backfill(conn: Connection, backfill_id: int) -> BackfillRow | None:
    """Read the backfill row, locking it (PostgreSQL) until the transaction ends."""
    stmt = _LOCK_BACKFILL if conn.dialect.name == "postgresql" else _READ_BACKFILL
    row = conn.execute(stmt, {"p_id": backfill_id}).one_or_none()
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


def start_runs(
    conn: Connection,
    backfill_id: int,
    count: int,
    *,
    dag_id: str,
    limit: int,
    backwards: bool,
    now: datetime,
) -> int:
    """Start up to `count` queued runs of the backfill (oldest first, newest with
    `backwards`) while fewer than `limit` runs of its DAG run, across all backfills.

    `max_active_runs` holds DAG-wide because the count and the starts happen
    under the DAG's lock (`tis.lock_dag`): a second starter counts after the
    first commits. Two statements under that lock; returns the runs started.
    """
    if count <= 0:
        return 0
    lock_dag(conn, dag_id)
    running = conn.execute(
        sa.select(sa.func.count()).where(
            run.c.dag_id == dag_id, run.c.state == RunState.RUNNING.value
        )
    ).scalar_one()
    count = min(count, limit - int(running))
    if count <= 0:
        return 0
    order = run.c.logical_date.desc() if backwards else run.c.logical_date
    nxt = (
        sa.select(run.c.id)
        .where(run.c.backfill_id == backfill_id, run.c.state == _STARTABLE)
        .order_by(order)
        .limit(count)
        .scalar_subquery()
    )
    stmt = (
        sa.update(run)
        .where(run.c.id.in_(nxt), run.c.state == _STARTABLE)
        .values(state=_R.RUNNING.value, start_date=now, updated_at=now)
    )
    return conn.execute(stmt).rowcount


@dataclass(frozen=True, kw_only=True)
class EndedRun:
    """A run this transaction finished: what its callbacks' context needs."""

    id: int
    run_id: str
    logical_date: datetime
    data_interval_start: datetime
    data_interval_end: datetime
    conf: dict[str, Any]
    state: RunState


_ENDED = (
    *(run.c.id, run.c.run_id, run.c.logical_date, run.c.data_interval_start),
    *(run.c.data_interval_end, run.c.conf, run.c.state),
)


def finish_runs(
    conn: Connection, outcomes: Sequence[tuple[int, RunState]], *, now: datetime
) -> list[EndedRun]:
    """Finish running runs: one statement per outcome state; the runs it finished.

    Each statement is conditional on the run still running and returns the rows
    it changed: of two transactions finishing the same run, only the one whose
    UPDATE wins gets the run back (the run's callbacks fire there, exactly once).
    """
    ended: list[EndedRun] = []
    for state in (RunState.SUCCESS, RunState.FAILED):
        ids = [dag_run_id for dag_run_id, outcome in outcomes if outcome is state]
        if ids:
            stmt = (
                sa.update(run)
                .where(run.c.id.in_(ids), run.c.state == _FINISHABLE)
                .values(state=state.value, end_date=now, updated_at=now)
                .returning(*_ENDED)
            )
            ended.extend(
                EndedRun(**{**row._asdict(), "state": RunState(row.state)})
                for row in conn.execute(stmt)
            )
    return ended


def set_backfill_state(
    conn: Connection,
    backfill_id: int,
    state: BackfillState,
    *,
    now: datetime,
    seen: BackfillState | None = None,
) -> bool:
    """Move the backfill to `state` from `seen`, the state the caller read it in (checked
    against BACKFILL_TRANSITIONS), or without `seen` from any state the table leads to
    `state` from. False: it is in none of them (or does not exist); the caller decides
    what a miss means.
    """
    sources = sources_of(state) if seen is None else {source(seen, state)}
    stmt = (
        sa.update(bf)
        .where(bf.c.id == backfill_id, bf.c.state.in_(sorted(s.value for s in sources)))
        .values(state=state.value, updated_at=now)
        .returning(bf.c.id)
    )
    return conn.execute(stmt).one_or_none() is not None


def refresh_statistics(conn: Connection) -> None:
    """Re-sample the planner's statistics of runs and TIs after a bulk write.

    Autovacuum may be off (it is on some servers), and without statistics the
    planner takes a new backfill's thousands of runs for a handful: nested
    loops over every run in the pass's statements. PostgreSQL samples a fixed
    number of rows; SQLite is told to do the same (`analysis_limit`).
    """
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("ANALYZE dag_runs, task_instances"))
    else:
        conn.execute(sa.text("PRAGMA analysis_limit = 1000"))
        conn.execute(sa.text("ANALYZE dag_runs"))
        conn.execute(sa.text("ANALYZE task_instances"))
