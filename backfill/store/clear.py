"""Clearing task instances of a backfill so they run again (`backfill clear`). (store)

Invariants:
- the selection is read in SQL: the backfill's TIs, filtered by task ids,
  states and a logical-date range; only TIs in a state `none` can be reached
  from are selectable (finished, running, waiting for a retry or a
  reschedule): scheduled and queued TIs are about to run anyway;
- `clear` is ONE transaction that locks the backfill row first (it waits for
  a coordinator pass holding it, as `store.control` does), reopens an ended
  backfill (success/failed -> running), resets the TIs as Airflow's clear
  does (`adopt.reset_tis`: try number kept, `max_tries = try_number +
  retries`, claim token cleared) and reopens their finished runs (-> queued:
  a coordinator starts them within max_active_runs). A running TI it resets
  is fenced: its worker's heartbeat and outcome match no row, so the worker
  stops the callable, and the next try is dispatched afresh;
- a TI that changed since it was selected (say it was queued meanwhile)
  matches no row: it is reported as not cleared, never overwritten;
- a cancelled backfill is never reopened: `ClearRefused`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from backfill.model.states import BackfillState, RunState, TIState, sources_of
from backfill.store import adopt, runs
from backfill.store.errors import BackfillStateConflict
from backfill.store.runs import BackfillRow, TaskSpec
from backfill.store.schema import backfills, dag_runs, task_instances

ti, run, bf = task_instances, dag_runs, backfills
_B = BackfillState
CLEARABLE: frozenset[TIState] = sources_of(TIState.NONE)
# Not `removed`: their task left the DAG, or their map index its mapped task (`store.mapping`).
_SELECTABLE = CLEARABLE - {TIState.REMOVED}
_REOPENABLE = sorted(s.value for s in sources_of(RunState.QUEUED))  # success, failed


@dataclass(frozen=True, kw_only=True)
class Selected:
    ti_id: int
    dag_run_id: int
    task_id: str
    logical_date: datetime
    state: TIState
    try_number: int
    map_index: int = -1


@dataclass(frozen=True, kw_only=True)
class Cleared:
    task_instances: int  # reset to `none`
    fenced: int  # of them, tries that were running
    runs: int  # finished runs reopened
    reopened: bool  # the backfill had ended and runs again
    reset: frozenset[tuple[int, str]] = frozenset()  # (run pk, task) of the TIs reset


def select(
    conn: Connection,
    backfill_id: int,
    *,
    task_ids: Sequence[str] | None = None,
    states: Sequence[TIState] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    run_ids: Sequence[int] | None = None,
    map_indexes: Sequence[int] | None = None,
) -> list[Selected]:
    """The backfill's clearable TIs matching every filter given, by date then task."""
    wanted = _SELECTABLE if states is None else _SELECTABLE & set(states)
    stmt = (
        sa.select(
            ti.c.id.label("ti_id"),
            ti.c.dag_run_id,
            ti.c.task_id,
            run.c.logical_date,
            ti.c.state,
            ti.c.try_number,
            ti.c.map_index,
        )
        .select_from(ti.join(run, run.c.id == ti.c.dag_run_id))
        .where(run.c.backfill_id == backfill_id, ti.c.state.in_(sorted(s.value for s in wanted)))
        .order_by(run.c.logical_date, ti.c.task_id, ti.c.map_index)
    )
    if task_ids is not None:
        stmt = stmt.where(ti.c.task_id.in_(list(task_ids)))
    if start is not None:
        stmt = stmt.where(run.c.logical_date >= start)
    if end is not None:
        stmt = stmt.where(run.c.logical_date <= end)
    if run_ids is not None:
        stmt = stmt.where(ti.c.dag_run_id.in_(list(run_ids)))
    if map_indexes is not None:
        stmt = stmt.where(ti.c.map_index.in_(list(map_indexes)))
    return [Selected(**{**row._mapping, "state": TIState(row.state)}) for row in conn.execute(stmt)]


def clear(
    conn: Connection,
    row: BackfillRow,
    targets: Sequence[Selected],
    specs: Mapping[str, TaskSpec],
    *,
    actor: str,
    now: datetime,
) -> Cleared:
    """Reset `targets` to run again and reopen what they belong to (see the invariants).
    `row`: the backfill, read under its lock (`runs.lock_backfill`) in this transaction."""
    backfill_id = row.id
    if row.state is _B.CANCELLED:
        raise BackfillStateConflict(
            f"backfill {backfill_id} was cancelled, for good; to run its dates again start a "
            "new one: backfill run DAG_ID -s START -e END --reprocess failed"
        )
    reopened = row.state in (_B.SUCCESS, _B.FAILED)
    if reopened:  # cannot miss: read under the row's lock, held till commit
        runs.set_backfill_state(conn, backfill_id, _B.RUNNING, seen=row.state, now=now)
    keys = [(t.dag_run_id, t.task_id, t.map_index) for t in targets]
    done = adopt.reset_tis(conn, targets=keys, specs=specs, actor=actor, now=now)
    fenced = sum(
        1
        for t in targets
        if t.state is TIState.RUNNING and (t.dag_run_id, t.task_id, t.map_index) in done
    )
    reopened_runs = _reopen_runs(conn, backfill_id, sorted({pk for pk, _, _ in done}), now=now)
    return Cleared(
        task_instances=len(done),
        fenced=fenced,
        runs=reopened_runs,
        reopened=reopened,
        reset=frozenset((pk, task_id) for pk, task_id, _ in done),
    )


def _reopen_runs(conn: Connection, backfill_id: int, run_ids: list[int], *, now: datetime) -> int:
    """Finished runs of `run_ids` back to `queued`: a coordinator starts them again."""
    if not run_ids:
        return 0
    stmt = (
        sa.update(run)
        .where(
            run.c.backfill_id == backfill_id,
            run.c.id.in_(run_ids),
            run.c.state.in_(_REOPENABLE),
        )
        .values(state=RunState.QUEUED.value, start_date=None, end_date=None, updated_at=now)
    )
    return conn.execute(stmt).rowcount
