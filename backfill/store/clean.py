"""Deleting ended backfills with everything they own (`backfill db clean`). (store)

Invariants:
- a backfill is cleanable when it ended (success, failed or cancelled) before
  the cut-off (its last change, `updated_at`) and none of its runs is queued
  or running and none of its TIs is queued or running: a backfill a driver or
  a worker may still touch is never deleted (a cancel lets running tries end);
- a backfill goes children first: TIs with their journal, logs and refused
  writes, then runs with
  theirs, then the backfill with its own, in transactions of at most `batch`
  rows each, so locks and memory stay bounded at any size. Every transaction
  first reads the backfill under its lock (`runs.lock_backfill`) and deletes
  nothing unless it is still cleanable;
- the backfill row goes last: an interrupted clean leaves it listed (with
  fewer TIs), and the next clean finishes it;
- the dry run (`cleanable`) selects with the same conditions as the delete.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from backfill.model.states import ACTIVE, BACKFILL_FINISHED, RUN_FINISHED, RunState
from backfill.store.runs import lock_backfill
from backfill.store.schema import (
    backfill_transitions,
    backfills,
    dag_runs,
    refused_writes,
    run_transitions,
    task_instances,
    ti_logs,
    ti_results,
    ti_transitions,
)

bf, run, ti = backfills, dag_runs, task_instances
CLEAN_BATCH = 10_000  # rows deleted per transaction

_ENDED = sorted(s.value for s in BACKFILL_FINISHED)
_RUN_UNFINISHED = sorted(s.value for s in RunState if s not in RUN_FINISHED)
_TI_ACTIVE = sorted(s.value for s in ACTIVE)


@dataclass(frozen=True, kw_only=True)
class Cleanable:
    id: int
    dag_id: str
    state: str
    ended_at: datetime
    runs: int
    task_instances: int


@dataclass(frozen=True)
class Deleted:
    """What one transaction of `delete_some` deleted."""

    task_instances: int = 0
    runs: int = 0
    backfill: bool = False  # the backfill row itself: nothing of it is left


def _still_active() -> sa.ColumnElement[bool]:
    """A run of the backfill in `bf` still queued or running, or a TI still active."""
    runs_of = run.c.backfill_id == bf.c.id
    busy_run = sa.exists().where(runs_of, run.c.state.in_(_RUN_UNFINISHED))
    busy_ti = sa.exists().where(ti.c.dag_run_id == run.c.id, runs_of, ti.c.state.in_(_TI_ACTIVE))
    return sa.or_(busy_run, busy_ti)


def _is_cleanable(before: datetime) -> sa.ColumnElement[bool]:
    """The backfill in `bf` ended before `before` and nothing of it is still active."""
    return sa.and_(bf.c.state.in_(_ENDED), bf.c.updated_at < before, ~_still_active())


def cleanable(conn: Connection, before: datetime) -> list[Cleanable]:
    """The backfills a clean with cut-off `before` deletes, oldest first, with their sizes."""
    runs_of = run.c.backfill_id == bf.c.id
    n_runs = sa.select(sa.func.count()).where(runs_of).scalar_subquery()
    n_tis = (
        sa.select(sa.func.count())
        .select_from(ti.join(run, ti.c.dag_run_id == run.c.id))
        .where(runs_of)
        .scalar_subquery()
    )
    stmt = (
        sa.select(
            bf.c.id,
            bf.c.dag_id,
            bf.c.state,
            bf.c.updated_at.label("ended_at"),
            n_runs.label("runs"),
            n_tis.label("task_instances"),
        )
        .where(_is_cleanable(before))
        .order_by(bf.c.updated_at, bf.c.id)
    )
    return [Cleanable(**row._mapping) for row in conn.execute(stmt)]


def _locked_and_cleanable(conn: Connection, backfill_id: int, before: datetime) -> bool:
    """Lock the backfill's row and check it is still cleanable, in this transaction."""
    if lock_backfill(conn, backfill_id) is None:
        return False
    stmt = sa.select(bf.c.id).where(bf.c.id == backfill_id, _is_cleanable(before))
    return conn.execute(stmt).first() is not None


def delete_some(
    conn: Connection, backfill_id: int, before: datetime, *, batch: int = CLEAN_BATCH
) -> Deleted | None:
    """One transaction's share of deleting a cleanable backfill: up to `batch` TIs (with
    their journal, logs and refused writes) or, once none is left, up to `batch` runs
    (with theirs), or, once none is left, the backfill itself (with its journal).
    None: the backfill is gone or no longer cleanable, and nothing was deleted."""
    if not _locked_and_cleanable(conn, backfill_id, before):
        return None
    runs_of = sa.select(run.c.id).where(run.c.backfill_id == backfill_id)
    ti_ids = (
        conn.execute(
            sa.select(ti.c.id).where(ti.c.dag_run_id.in_(runs_of)).order_by(ti.c.id).limit(batch)
        )
        .scalars()
        .all()
    )
    if ti_ids:
        for child in (ti_transitions, ti_logs, ti_results, refused_writes):
            conn.execute(sa.delete(child).where(child.c.task_instance_id.in_(ti_ids)))
        conn.execute(sa.delete(ti).where(ti.c.id.in_(ti_ids)))
        return Deleted(task_instances=len(ti_ids))
    run_ids = conn.execute(runs_of.order_by(run.c.id).limit(batch)).scalars().all()
    if run_ids:
        conn.execute(sa.delete(run_transitions).where(run_transitions.c.dag_run_id.in_(run_ids)))
        conn.execute(sa.delete(run).where(run.c.id.in_(run_ids)))
        return Deleted(runs=len(run_ids))
    conn.execute(
        sa.delete(backfill_transitions).where(backfill_transitions.c.backfill_id == backfill_id)
    )
    conn.execute(sa.delete(bf).where(bf.c.id == backfill_id))
    return Deleted(backfill=True)
