"""The one snapshot a coordinator pass decides from. (store)

`read_snapshot` reads every TI of a backfill's running runs in ONE
statement; nothing in a pass is refreshed piecemeal (DESIGN 1.1).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from backfill.model.states import FAILED_STATES, RunState, TIState
from backfill.planning.snapshot import LimitCounts, RunRow, Snapshot, TIRow
from backfill.store.schema import dag_runs, task_instances

ti, run = task_instances, dag_runs
# By value, looked up once per row: a pass reads every TI of the running runs.
_TI_STATES = {state.value: state for state in TIState}
_RUN_STATES = {state.value: state for state in RunState}


def read_snapshot(
    conn: Connection,
    backfill_id: int,
    limits: LimitCounts,
    *,
    task_ids: Collection[str] | None = None,
    backlog_cap: int | None = None,
) -> Snapshot:
    """Every TI of the backfill's running runs and the run backlog, in ONE statement
    (the backlog rides on every row as two uncorrelated subqueries, evaluated once;
    a second statement reads it only when no run is running).

    `removed` TIs are left out: their task is no longer in the DAG the planner has, or
    their map index is no longer one of their mapped task's (`store.mapping`).
    `task_ids` (`--task-regex`; None: all) limits which TIs' failures count as
    `earlier_failures`; the TIs of other tasks are still read (the planner ignores them).
    `backlog_cap`: count the runs not started yet no further (a pass starts at most
    max_active_runs of them), so the count does not grow with a year of queued runs.
    """
    selected = None if task_ids is None else sorted(task_ids)
    params = {"p_backfill": backfill_id, "p_cap": backlog_cap, "p_tasks": selected}
    shape = (selected is not None, backlog_cap is not None)
    runs: dict[int, RunRow] = {}
    tis: list[TIRow] = []
    rows = conn.execute(_SNAPSHOT[shape], params).all()
    for row in rows:  # unpacked: a pass reads every TI of its runs
        run_pk, run_id, logical_date, run_state, ti_id, task_id, state, *rest = row
        if run_pk not in runs:  # each row carries its run; build the run once
            runs[run_pk] = RunRow(
                id=run_pk, run_id=run_id, logical_date=logical_date, state=_RUN_STATES[run_state]
            )
        try_number, max_tries, pool, pool_slots, priority_weight, next_try_at, index = rest[:7]
        tis.append(
            TIRow(
                id=ti_id,
                dag_run_id=run_pk,
                task_id=task_id,
                state=_TI_STATES[state],
                try_number=try_number,
                max_tries=max_tries,
                pool=pool,
                pool_slots=pool_slots,
                priority_weight=priority_weight,
                next_try_at=next_try_at,
                map_index=index,
            )
        )
    queued_runs, earlier_failures = (
        rows[0][-2:] if rows else conn.execute(_BACKLOG[shape], params).one()
    )
    return Snapshot(
        runs=tuple(runs.values()),
        tis=tuple(tis),
        queued_runs=int(queued_runs),
        limits=limits,
        earlier_failures=bool(earlier_failures),
    )


def _backlog(selects: bool, capped: bool) -> sa.Select[int, bool]:
    """One statement: the runs not started yet (counted up to `p_cap` if `capped`), and
    whether a run no longer running had a failed TI (of `p_tasks` if `selects`), which
    the snapshot of the running runs cannot show."""
    waiting = sa.select(run.c.id).where(
        run.c.backfill_id == _P("p_backfill"), run.c.state == RunState.QUEUED.value
    )
    if capped:
        waiting = waiting.limit(_P("p_cap"))
    queued = sa.select(sa.func.count()).select_from(waiting.subquery()).scalar_subquery()
    failed = _failed_tis(_P("p_backfill"), _P("p_tasks", expanding=True) if selects else None)
    return sa.select(queued, sa.exists(failed.where(run.c.state != RunState.RUNNING.value)))


def _snapshot(selects: bool, capped: bool) -> sa.Select[Any]:
    """Every TI of the running runs of backfill `p_backfill`, with the backlog on each row."""
    return (
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
            ti.c.map_index,
            *_backlog(selects, capped).selected_columns,
        )
        .select_from(run.join(ti, ti.c.dag_run_id == run.c.id))
        .where(
            run.c.backfill_id == _P("p_backfill"),
            run.c.state == RunState.RUNNING.value,
            ti.c.state != TIState.REMOVED.value,
        )
        .order_by(run.c.logical_date, ti.c.id)
    )


def has_failures(
    conn: Connection, backfill_id: int, *, task_ids: Collection[str] | None = None
) -> bool:
    """Whether a TI of the backfill, of `task_ids` (None: any task), ended failed or
    upstream_failed (one statement). A reprocessed run keeps the TIs `--task-regex`
    left out, failed ones included: they are not this backfill's failures."""
    tasks = None if task_ids is None else sorted(task_ids)
    return bool(conn.execute(sa.select(sa.exists(_failed_tis(backfill_id, tasks)))).scalar_one())


def _failed_tis(backfill_id: int | sa.BindParameter[Any], task_ids: Any | None) -> sa.Select[int]:
    """The failed TIs of the backfill, of `task_ids` (a list, or a bound parameter) if not None."""
    stmt = (
        sa.select(ti.c.id)
        .select_from(ti.join(run, ti.c.dag_run_id == run.c.id))
        .where(run.c.backfill_id == backfill_id, ti.c.state.in_([s.value for s in FAILED_STATES]))
    )
    return stmt if task_ids is None else stmt.where(ti.c.task_id.in_(task_ids))


# Built once per shape (`--task-regex` or not, a backlog cap or not), with bound
# parameters: building the statement in every pass cost about as much as running it.
_P = sa.bindparam
_SHAPES = [(selects, capped) for selects in (False, True) for capped in (False, True)]
_BACKLOG = {shape: _backlog(*shape) for shape in _SHAPES}
_SNAPSHOT = {shape: _snapshot(*shape) for shape in _SHAPES}
