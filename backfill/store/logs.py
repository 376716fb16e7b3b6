"""Per-try logs in the metadata DB: chunks appended while a try runs. (store)

Invariants:
- a chunk is one row, appended by the worker running the try (never one row
  per line); `start_byte` is its offset in the try's whole log, so readers
  page by offset: `read(after=n)` returns what follows byte n, and a first
  kept chunk that starts after the reader's offset shows what was cut;
- the tail is kept: a worker over its cap deletes the oldest chunks of its
  try (`trim`), one statement, and never rewrites a kept one;
- a log write is not fenced on the claim: what a try printed stays its own
  (keyed by its try number) even after its claim was lost, and a try is
  claimed once, so no other writer appends to it;
- each statement stands alone (the worker's engine is in autocommit): a
  worker killed mid-try keeps every chunk it had flushed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from backfill.model.states import TIState
from backfill.store.schema import backfills, dag_runs, task_instances, ti_logs, ti_transitions

_RUNNING = TIState.RUNNING.value


@dataclass(frozen=True, kw_only=True)
class Chunk:
    start_byte: int
    at: datetime
    data: str


def append(
    conn: Connection, *, ti_id: int, try_number: int, start_byte: int, data: str, at: datetime
) -> None:
    """Store one chunk of try `try_number` of TI `ti_id`, starting at `start_byte`."""
    conn.execute(
        sa.insert(ti_logs).values(
            task_instance_id=ti_id, try_number=try_number, start_byte=start_byte, at=at, data=data
        )
    )


def trim(conn: Connection, *, ti_id: int, try_number: int, below: int) -> None:
    """Delete the chunks of the try that start before byte `below` (its cut head)."""
    conn.execute(
        sa.delete(ti_logs).where(
            ti_logs.c.task_instance_id == ti_id,
            ti_logs.c.try_number == try_number,
            ti_logs.c.start_byte < below,
        )
    )


def read(
    conn: Connection, *, ti_id: int, try_number: int, after: int = 0, limit: int = 1000
) -> list[Chunk]:
    """Up to `limit` chunks of the try starting at or after byte `after`, in order."""
    stmt = (
        sa.select(ti_logs.c.start_byte, ti_logs.c.at, ti_logs.c.data)
        .where(
            ti_logs.c.task_instance_id == ti_id,
            ti_logs.c.try_number == try_number,
            ti_logs.c.start_byte >= after,
        )
        .order_by(ti_logs.c.start_byte)
        .limit(limit)
    )
    return [Chunk(**row._mapping) for row in conn.execute(stmt)]


def read_all(conn: Connection, *, ti_id: int, try_number: int) -> Iterator[Chunk]:
    """Every stored chunk of the try, in order, a page of chunks at a time."""
    after = 0
    while chunks := read(conn, ti_id=ti_id, try_number=try_number, after=after):
        yield from chunks
        after = chunks[-1].start_byte + 1


@dataclass(frozen=True, kw_only=True)
class LoggedTI:
    """A TI whose tries' logs can be read, with its latest try's state."""

    ti_id: int
    dag_run_id: int
    dag_id: str
    task_id: str
    map_index: int  # -1: not mapped, or a mapped task's placeholder
    run_id: str
    logical_date: datetime
    state: str
    try_number: int  # its latest try; 0: none started yet
    last_error: str | None


def find_tis(
    conn: Connection,
    backfill_id: int,
    task_id: str,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    map_indexes: Collection[int] | None = None,
    limit: int = 10,
) -> list[LoggedTI]:
    """Up to `limit` TIs of `task_id` in the backfill with a logical date in [start, end)
    (and one of `map_indexes`, if given), by date then map index."""
    ti, run = task_instances, dag_runs
    stmt = (
        sa.select(
            ti.c.id.label("ti_id"),
            ti.c.dag_run_id,
            run.c.dag_id,
            ti.c.task_id,
            ti.c.map_index,
            run.c.run_id,
            run.c.logical_date,
            ti.c.state,
            ti.c.try_number,
            ti.c.last_error,
        )
        .select_from(ti.join(run, run.c.id == ti.c.dag_run_id))
        .where(run.c.backfill_id == backfill_id, ti.c.task_id == task_id)
        .order_by(run.c.logical_date, ti.c.map_index)
        .limit(limit)
    )
    if start is not None:
        stmt = stmt.where(run.c.logical_date >= start)
    if end is not None:
        stmt = stmt.where(run.c.logical_date < end)
    if map_indexes is not None:
        stmt = stmt.where(ti.c.map_index.in_(sorted(map_indexes)))
    return [LoggedTI(**row._mapping) for row in conn.execute(stmt)]


def map_states(conn: Connection, dag_run_id: int, task_id: str) -> dict[int, str]:
    """Map index -> state of each TI of `task_id` in run `dag_run_id` with a map index
    (>= 0: a mapped task's elements, `removed` ones included), in map index order; empty
    for a task that is not mapped there (yet). ONE statement over the TI key."""
    ti = task_instances
    stmt = (
        sa.select(ti.c.map_index, ti.c.state)
        .where(ti.c.dag_run_id == dag_run_id, ti.c.task_id == task_id, ti.c.map_index >= 0)
        .order_by(ti.c.map_index)
    )
    return {row.map_index: row.state for row in conn.execute(stmt)}


class Current(NamedTuple):
    state: str
    try_number: int
    last_error: str | None
    backfill_state: str


def current(conn: Connection, ti_id: int) -> Current:
    """The TI's state, latest try number and last error, and its backfill's state, now."""
    ti, run, bf = task_instances, dag_runs, backfills
    stmt = (
        sa.select(ti.c.state, ti.c.try_number, ti.c.last_error, bf.c.state)
        .select_from(
            ti.join(run, run.c.id == ti.c.dag_run_id).join(bf, bf.c.id == run.c.backfill_id)
        )
        .where(ti.c.id == ti_id)
    )
    return Current(*conn.execute(stmt).one())


@dataclass(frozen=True, kw_only=True)
class TryHistory:
    """One try as its journal tells it: who claimed it when, and how it ended."""

    claimed_by: str | None  # the journal's actor, `worker:host:pid`
    claimed_at: datetime | None
    ended_as: str | None  # its state out of `running`; None: still running (or never ran)
    ended_at: datetime | None


def try_history(conn: Connection, ti_id: int, try_number: int) -> TryHistory:
    """The claim and the end of try `try_number` of TI `ti_id`, from the journal."""
    j = ti_transitions
    rows = conn.execute(
        sa.select(j.c.from_state, j.c.to_state, j.c.actor, j.c.at)
        .where(j.c.task_instance_id == ti_id, j.c.try_number == try_number)
        .where(sa.or_(j.c.to_state == _RUNNING, j.c.from_state == _RUNNING))
        .order_by(j.c.id)
    ).all()
    claimed = next((r for r in rows if r.to_state == _RUNNING), None)
    ended = next((r for r in rows if r.from_state == _RUNNING), None)
    return TryHistory(
        claimed_by=None if claimed is None else claimed.actor,
        claimed_at=None if claimed is None else claimed.at,
        ended_as=None if ended is None else ended.to_state,
        ended_at=None if ended is None else ended.at,
    )


def every_try(conn: Connection, ti_id: int) -> dict[int, TryHistory]:
    """Each try of TI `ti_id` that was claimed, by try number, from the journal: ONE
    statement (a TI has a handful of tries)."""
    j = ti_transitions
    rows = conn.execute(
        sa.select(j.c.try_number, j.c.from_state, j.c.to_state, j.c.actor, j.c.at)
        .where(j.c.task_instance_id == ti_id)
        .where(sa.or_(j.c.to_state == _RUNNING, j.c.from_state == _RUNNING))
        .order_by(j.c.id)
    ).all()
    tries: dict[int, TryHistory] = {}
    for row in rows:
        seen = tries.get(row.try_number)
        if row.to_state == _RUNNING and seen is None:
            tries[row.try_number] = TryHistory(
                claimed_by=row.actor, claimed_at=row.at, ended_as=None, ended_at=None
            )
        elif row.from_state == _RUNNING and seen is not None and seen.ended_as is None:
            ended = {"ended_as": row.to_state, "ended_at": row.at}
            tries[row.try_number] = dataclasses.replace(seen, **ended)
    return tries
