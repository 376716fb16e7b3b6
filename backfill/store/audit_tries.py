"""The audit of each try's claims, in ONE statement over a backfill's TI journal. (store)

A TI's journal rows, in id order, are its history: the trigger inserts them
as its statements change the row, and two changes of one TI are serialised
by its row lock. Every row carries the try number the TI was at.

A *dispatch* of try n of a TI is the span of its rows for n from one queueing
to the next: a rescheduled sensor (`up_for_reschedule -> queued`) is the one
re-queueing that keeps its try number (`tis.queue`), so it starts a new
dispatch of the same try; any other queueing starts a new try, so a try
re-queued some other way and claimed again shows as claimed twice. Within a
dispatch, the first `queued -> running` row is THE claim and its actor
(`worker:<host:pid>`) the claimant; the first row after it out of `running`
is where the try left running (the worker's outcome, or a reap). Then:

- `double_claim`: any later `queued -> running` row of the dispatch (only
  one claimant may win a try);
- `write_after_lost_claim`: a row made by a worker (actor `worker:...`) after
  the try left running; or the row that left running, made by a worker
  other than the claimant. A claim row is judged by `double_claim` only.

Bounded: three nested window passes partitioned by (TI, try), then a filter
that keeps violations only; the TI, its run and the row where the try left
running are joined to those only. Both backends (SQLite 3.25+, PostgreSQL).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from backfill.model.states import TIState
from backfill.store.journal import Step
from backfill.store.schema import dag_runs, task_instances, ti_transitions

tj, ti, run = ti_transitions, task_instances, dag_runs
_S = TIState
WORKER_PREFIX = "worker:"  # the actor of the claim and of the worker's finish


def _flag(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[int]:
    return sa.case((condition, 1), else_=0)


def _dispatches(tis: sa.Select[tuple[int]]) -> sa.Subquery:
    """The journal rows of the TIs `tis`, each with its dispatch number within its try."""
    requeue = sa.and_(
        tj.c.from_state == _S.UP_FOR_RESCHEDULE.value, tj.c.to_state == _S.QUEUED.value
    )
    claim = sa.and_(tj.c.from_state == _S.QUEUED.value, tj.c.to_state == _S.RUNNING.value)
    dispatch = sa.func.sum(_flag(requeue)).over(
        partition_by=(tj.c.task_instance_id, tj.c.try_number), order_by=tj.c.id, rows=(None, 0)
    )
    return (
        sa.select(
            tj.c.id,
            tj.c.task_instance_id,
            tj.c.try_number,
            tj.c.from_state,
            tj.c.to_state,
            tj.c.actor,
            _flag(claim).label("is_claim"),
            dispatch.label("dispatch"),
        )
        .where(tj.c.task_instance_id.in_(tis))
        .subquery("dispatched")
    )


def _per_dispatch(rows: sa.Subquery) -> dict[str, Any]:
    return {"partition_by": (rows.c.task_instance_id, rows.c.try_number, rows.c.dispatch)}


def _with_claim(rows: sa.Subquery) -> sa.Subquery:
    """Each row with the id of its dispatch's claim (NULL: none yet)."""
    first = sa.func.min(sa.case((rows.c.is_claim == 1, rows.c.id))).over(**_per_dispatch(rows))
    return sa.select(rows, first.label("claim_id")).subquery("claimed")


def _with_exit(rows: sa.Subquery) -> sa.Subquery:
    """Each row with its dispatch's claimant and the id of the row that left running."""
    window = _per_dispatch(rows)
    claimant = sa.func.max(sa.case((rows.c.id == rows.c.claim_id, rows.c.actor))).over(**window)
    left = sa.and_(rows.c.from_state == _S.RUNNING.value, rows.c.id > rows.c.claim_id)
    exit_id = sa.func.min(sa.case((left, rows.c.id))).over(**window)
    return sa.select(rows, claimant.label("claimant"), exit_id.label("exit_id")).subquery("exits")


def claim_violations(tis: sa.Select[tuple[int]]) -> sa.Select[Any]:
    """The `double_claim` (`is_claim` 1) and `write_after_lost_claim` (0) rows of the TIs
    `tis`, with the TI's key, the claim (`claim_id`, `claimant`) and the row that left
    running (`exit_*`), by logical date, task, try and row: ONE statement."""
    rows = _with_exit(_with_claim(_dispatches(tis)))
    exit_row = tj.alias("exit_row")
    by_worker = rows.c.actor.startswith(WORKER_PREFIX, autoescape=True)
    double = sa.and_(rows.c.is_claim == 1, rows.c.id > rows.c.claim_id)
    after = sa.or_(
        rows.c.id > rows.c.exit_id,
        sa.and_(rows.c.id == rows.c.exit_id, rows.c.actor != rows.c.claimant),
    )
    lost = sa.and_(rows.c.is_claim == 0, by_worker, after)
    return (
        sa.select(
            rows.c.is_claim,
            rows.c.id,
            rows.c.from_state,
            rows.c.to_state,
            rows.c.actor,
            rows.c.try_number,
            rows.c.claim_id,
            rows.c.claimant,
            rows.c.exit_id,
            exit_row.c.from_state.label("exit_from"),
            exit_row.c.to_state.label("exit_to"),
            exit_row.c.actor.label("exit_actor"),
            ti.c.dag_id,
            ti.c.task_id,
            run.c.logical_date,
        )
        .select_from(
            rows.join(ti, ti.c.id == rows.c.task_instance_id)
            .join(run, run.c.id == ti.c.dag_run_id)
            .outerjoin(exit_row, exit_row.c.id == rows.c.exit_id)
        )
        .where(sa.or_(double, lost))
        .order_by(run.c.logical_date, ti.c.task_id, rows.c.try_number, rows.c.id)
    )


def claim_steps(row: Any) -> tuple[Step, ...]:
    """The journal rows that show the violation in `row` (of `claim_violations`), oldest
    first: the claim, where the try left running if it did before, the row at fault."""
    steps = [Step(row.claim_id, _S.QUEUED.value, _S.RUNNING.value, row.claimant)]
    if not row.is_claim and row.exit_id != row.id:
        steps.append(Step(row.exit_id, row.exit_from, row.exit_to, row.exit_actor))
    steps.append(Step(row.id, row.from_state, row.to_state, row.actor))
    return tuple(steps)
