"""Each try's return value (store): written fenced by its worker, read by downstreams.

Invariants:
- `record` writes try N's value in ONE statement, an INSERT ... SELECT that
  inserts nothing unless the TI is still `running` at try N under the
  caller's claim token: a worker whose claim was lost writes nothing, like
  every other write of its try (`store.claims`). It runs before the try's
  `success` outcome, so the value is there when the TI turns `success`; a
  retried call after a lost reply finds its own row (one row a try);
- `upstream` reads, in ONE statement, the result of a task in the reader's
  own run (each TI of it, for a mapped task): it is visible only while that
  TI is `success` and the value was written at its current try. A cleared TI
  (back to `none`, its try number kept) hides its old value until a new try
  succeeds; a success that returned nothing (None) has no row: its result is
  None. `read_value` turns what it read into what `ctx.result` returns.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from backfill.model.states import TIState
from backfill.store.claims import Claim
from backfill.store.schema import task_instances, ti_results

ti, res = task_instances, ti_results
_S = TIState


def record(conn: Connection, claim: Claim, value: str, *, now: datetime) -> bool:
    """Store `value` (JSON text) as the result of `claim`'s try; False: the claim is lost."""
    fenced = sa.select(
        sa.literal(claim.ti_id),
        sa.literal(claim.try_number),
        sa.literal(value, sa.Text),
        sa.literal(len(value.encode()), sa.Integer),
        sa.literal(now, res.c.at.type),
    ).where(
        ti.c.id == claim.ti_id,
        ti.c.state == _S.RUNNING.value,
        ti.c.try_number == claim.try_number,
        ti.c.claim_token == claim.token,
    )
    mine = sa.select(res.c.id).where(
        res.c.task_instance_id == claim.ti_id, res.c.try_number == claim.try_number
    )
    if conn.execute(mine).first() is not None:  # a retry: the earlier attempt landed
        return True
    stmt = sa.insert(res).from_select(
        ["task_instance_id", "try_number", "value", "bytes", "at"], fenced
    )
    return conn.execute(stmt).rowcount == 1


@dataclass(frozen=True, kw_only=True)
class TaskResult:
    """One TI of a task in a run, with its current try's stored result."""

    map_index: int
    state: TIState
    value: str | None  # JSON text; None: not success at this try, or it returned None


def upstream(conn: Connection, ti_id: int, task_id: str) -> list[TaskResult]:
    """The TIs of `task_id` in the run of TI `ti_id` (several if it is mapped), by map
    index, each with its result (see the invariants); `removed` ones are left out."""
    me = ti.alias("me")
    return _read(
        conn, _of_task(task_id).where(ti.c.dag_run_id == me.c.dag_run_id, me.c.id == ti_id)
    )


def of_run(conn: Connection, dag_run_id: int, task_id: str) -> list[TaskResult]:
    """As `upstream`, for the run `dag_run_id` (a coordinator mapping a task)."""
    return _read(conn, _of_task(task_id).where(ti.c.dag_run_id == dag_run_id))


def _of_task(task_id: str) -> sa.Select[Any]:
    visible = sa.and_(
        res.c.task_instance_id == ti.c.id,
        res.c.try_number == ti.c.try_number,
        ti.c.state == _S.SUCCESS.value,
    )
    return (
        sa.select(ti.c.map_index, ti.c.state, res.c.value)
        .select_from(ti.outerjoin(res, visible))
        .where(ti.c.task_id == task_id, ti.c.state != _S.REMOVED.value)
        .order_by(ti.c.map_index)
    )


def _read(conn: Connection, stmt: sa.Select[Any]) -> list[TaskResult]:
    return [
        TaskResult(map_index=r.map_index, state=TIState(r.state), value=r.value)
        for r in conn.execute(stmt)
    ]


@dataclass(frozen=True)
class Read:
    """What a reader gets of a task's result: a value, or why there is none."""

    value: Any = None
    missing: str | None = None  # e.g. "it is failed"; None: `value` is the result


def read_value(found: Sequence[TaskResult], *, mapped: bool) -> Read:
    """A task's result from its TIs (`upstream`): the value of its one TI if `success`;
    of a mapped task, the list of its TIs' values that succeeded, by map index (`[]` when
    it mapped over nothing), once it is mapped."""
    if not found:
        return Read(missing="the run has no such task")
    if not mapped:
        only = found[0]
        if only.state is not _S.SUCCESS:
            return Read(missing=f"it is {only.state}")
        return Read(None if only.value is None else json.loads(only.value))
    elements = [r for r in found if r.map_index >= 0]
    if not elements:
        placeholder = found[0]
        if placeholder.state is _S.SKIPPED:
            return Read([])
        return Read(missing=f"it is not mapped yet (it is {placeholder.state})")
    return Read(
        [
            None if r.value is None else json.loads(r.value)
            for r in elements
            if r.state is _S.SUCCESS
        ]
    )
