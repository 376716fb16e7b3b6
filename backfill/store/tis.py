"""Coordinator-side task-instance transitions, each one conditional statement.

Every function changes TI states with ONE statement that names the states it
may come from (compare-and-set on the state the planner saw) and returns what
it changed; a row that changed meanwhile is not touched and is decided again
on the next pass. The journal row of each transition is written by a trigger
in the same transaction (`schema.JOURNAL_TRIGGER`), from the `updated_by`
column, so every transition names its actor.

Limits hold across coordinators and backfills because a queuer, in ONE
transaction, takes `lock_limits` (serialising queuers of the same DAG and of
the same pools), counts with `limit_counts`, admits under those counts and
only then calls `queue`: a second queuer counts after the first commits.
Lock order, everywhere: a backfill row, then its DAG (`lock_dag`), then pool
rows by name; nothing takes them the other way round, so no lock cycle.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from backfill.model.states import ACTIVE, RunState, TIState, source, sources_of
from backfill.planning.snapshot import LimitCounts, TIRow
from backfill.store.schema import UTCDateTime, dag_runs, pools, task_instances

ti = task_instances
_S = TIState
_ACTIVE = [s.value for s in ACTIVE]


@dataclass(frozen=True, kw_only=True)
class Queued:
    """A TI moved to `queued` for `try_number`: what its dispatch message needs."""

    id: int
    try_number: int
    task_id: str
    queue: str
    map_index: int = -1


def set_state(
    conn: Connection, tis: Sequence[TIRow], state: TIState, *, actor: str, now: datetime
) -> list[int]:
    """Move each TI to `state` from the state it was seen in (a terminal decision)."""
    if not tis:
        return []
    allowed = sources_of(state)
    expected = [(t.id, t.state.value) for t in tis if t.state in allowed]
    if not expected:
        return []
    stmt = (
        sa.update(ti)
        .where(sa.tuple_(ti.c.id, ti.c.state).in_(expected))
        .values(state=state.value, end_date=now, updated_at=now, updated_by=actor)
        .returning(ti.c.id)
    )
    return [row.id for row in conn.execute(stmt)]


def queue(conn: Connection, tis: Sequence[TIRow], *, actor: str, now: datetime) -> list[Queued]:
    """Move TIs to `queued` for their next try, each from the state it was seen in.

    A retry is a new try (`try_number + 1`); a rescheduled sensor keeps its try.
    The caller has admitted `tis` under the limits counted by `limit_counts`
    after `lock_limits` in the same transaction. Returns those queued in the
    order of `tis` (the dispatch order: RETURNING has none of its own).
    """
    if not tis:
        return []
    params = {
        "p_expected": [(t.id, t.state.value, t.try_number) for t in tis],
        "p_now": now,
        "p_actor": actor,
    }
    rank = {t.id: i for i, t in enumerate(tis)}
    rows = sorted(conn.execute(_QUEUE, params), key=lambda r: rank[r.id])
    return [_queued(r) for r in rows]


_NOW = ti.c.updated_at.type  # UTCDateTime
_QUEUE = (
    sa.update(ti)
    .where(
        sa.tuple_(ti.c.id, ti.c.state, ti.c.try_number).in_(
            sa.bindparam("p_expected", expanding=True)
        )
    )
    .where(ti.c.state.in_([s.value for s in sources_of(_S.QUEUED)]))
    .values(
        state=_S.QUEUED.value,
        try_number=sa.case(
            (ti.c.state == _S.UP_FOR_RESCHEDULE.value, ti.c.try_number),
            else_=ti.c.try_number + 1,
        ),
        queued_at=sa.bindparam("p_now", type_=_NOW),
        next_try_at=None,
        claim_token=None,
        updated_at=sa.bindparam("p_now", type_=_NOW),
        updated_by=sa.bindparam("p_actor"),
    )
    .returning(ti.c.id, ti.c.try_number, ti.c.task_id, ti.c.queue, ti.c.map_index)
)


def lock_limits(conn: Connection, dag_id: str, pool_names: Sequence[str]) -> None:
    """Serialise queueing for `dag_id` and these pools until the transaction ends.

    PostgreSQL: a transaction-scoped advisory lock per DAG, then the pool rows
    FOR UPDATE in name order (a fixed order, so two queuers cannot deadlock).
    SQLite: every write transaction already holds the database's write lock
    (BEGIN IMMEDIATE), so there is nothing more to take.
    """
    if conn.dialect.name != "postgresql":
        return
    lock_dag(conn, dag_id)
    names = sorted(set(pool_names))
    if names:
        conn.execute(_LOCK_POOLS, {"p_names": names})


def lock_dag(conn: Connection, dag_id: str) -> None:
    """Serialise, until the transaction ends, whatever counts `dag_id`'s active TIs or runs
    before adding to them (queueing, starting runs). Re-entrant within a transaction.

    PostgreSQL: a transaction-scoped advisory lock on "backfill:dag:<dag_id>". SQLite:
    nothing to take, every write transaction holds the database's write lock.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(_LOCK_DAG, {"p_key": f"backfill:dag:{dag_id}"})


# The statements of every pass, built once with bound parameters (building them per
# pass cost about as much as running them).
_LOCK_DAG = sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext(sa.bindparam("p_key"))))
_LOCK_POOLS = (
    sa.select(pools.c.name)
    .where(pools.c.name.in_(sa.bindparam("p_names", expanding=True)))
    .order_by(pools.c.name)
    .with_for_update()
)
_LIMIT_COUNTS = sa.union_all(
    sa.select(
        ti.c.pool,
        ti.c.dag_id,
        ti.c.task_id,
        sa.func.count().label("n"),
        sa.func.sum(ti.c.pool_slots).label("slots"),
    )
    .where(ti.c.state.in_(_ACTIVE))
    .group_by(ti.c.pool, ti.c.dag_id, ti.c.task_id),
    sa.select(pools.c.name, sa.null(), sa.null(), sa.literal(0), pools.c.slots.label("slots")),
)


def limit_counts(conn: Connection, dag_id: str) -> LimitCounts:
    """Occupancy of every pool and of `dag_id`'s tasks, across all backfills, and the
    pools' sizes: ONE statement (the active TIs by pool and task, then every pool's
    row with a NULL task), read through the partial index of active TIs."""
    pool_used: dict[str, int] = {}
    pool_sizes: dict[str, int] = {}
    task_active: dict[str, int] = {}
    for pool, dag, task_id, n, slots in conn.execute(_LIMIT_COUNTS):
        if task_id is None:  # a pool's row: its size
            pool_sizes[pool] = int(slots)
            continue
        pool_used[pool] = pool_used.get(pool, 0) + int(slots)
        if dag == dag_id:
            task_active[task_id] = task_active.get(task_id, 0) + int(n)
    return LimitCounts(
        pool_slots=pool_used,
        pool_sizes=pool_sizes,
        dag_active=sum(task_active.values()),
        task_active=task_active,
    )


def reap_stale(
    conn: Connection,
    *,
    backfill_id: int,
    cutoff: datetime,
    retry_delays: Mapping[str, timedelta],
    actor: str,
    now: datetime,
) -> list[int]:
    """Running TIs of the backfill silent since before `cutoff`: retry or fail them.

    A TI with a try left goes to `up_for_retry`, due after its task's delay in
    `retry_delays` (task_id -> retry_delay; absent: due at once); the others
    fail. Clearing the claim token fences the lost worker: its heartbeat and
    its outcome will match no row.
    """
    runs = _running_runs(backfill_id)
    retry = ti.c.try_number <= ti.c.max_tries
    stmt = (
        sa.update(ti)
        .where(
            ti.c.state == source(_S.RUNNING, _S.UP_FOR_RETRY, _S.FAILED).value,
            ti.c.heartbeat_at < cutoff,
            ti.c.dag_run_id.in_(runs),
        )
        .values(
            state=sa.case((retry, _S.UP_FOR_RETRY.value), else_=_S.FAILED.value),
            end_date=now,
            next_try_at=sa.case((retry, _due_after(retry_delays, now)), else_=None),
            claim_token=None,
            last_error=f"WorkerLost: no heartbeat since {cutoff.isoformat()}",
            updated_at=now,
            updated_by=actor,
        )
        .returning(ti.c.id)
    )
    return [row.id for row in conn.execute(stmt)]


def _running_runs(backfill_id: int) -> sa.Select[tuple[int]]:
    """The ids of the backfill's running runs: the only ones with queued or running TIs
    (a run finishes once all its TIs have), so housekeeping never reads finished work."""
    return sa.select(dag_runs.c.id).where(
        dag_runs.c.backfill_id == backfill_id, dag_runs.c.state == RunState.RUNNING.value
    )


def _due_after(delays: Mapping[str, timedelta], now: datetime) -> sa.ColumnElement[datetime]:
    """`now` + the TI's task delay, as SQL: one branch per distinct delay, not per task."""
    by_delay: dict[timedelta, list[str]] = defaultdict(list)
    for task_id, delay in sorted(delays.items()):
        by_delay[delay].append(task_id)
    at_once = sa.literal(now, UTCDateTime)
    if not by_delay:
        return at_once
    whens = [
        (ti.c.task_id.in_(ids), sa.literal(now + delay, UTCDateTime))
        for delay, ids in by_delay.items()
    ]
    return sa.case(*whens, else_=at_once)


def redispatch_lost(
    conn: Connection, *, backfill_id: int, cutoff: datetime, now: datetime
) -> list[Queued]:
    """Queued TIs never claimed since before `cutoff`: their message was lost; send again.

    Same try: a duplicate delivery is harmless, since only one claim can win.
    """
    runs = _running_runs(backfill_id)
    stmt = (
        sa.update(ti)
        .where(ti.c.state == _S.QUEUED.value, ti.c.queued_at < cutoff, ti.c.dag_run_id.in_(runs))
        .values(queued_at=now)
        .returning(ti.c.id, ti.c.try_number, ti.c.task_id, ti.c.queue, ti.c.map_index)
    )
    return [_queued(r) for r in conn.execute(stmt)]


def _queued(row: sa.Row[Any]) -> Queued:
    return Queued(
        id=row.id,
        try_number=row.try_number,
        task_id=row.task_id,
        queue=row.queue,
        map_index=row.map_index,
    )
