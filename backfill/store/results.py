"""Each try's return value (store): written fenced by its worker, read by downstreams.

Invariants:
- `record` writes try N's value in ONE statement, an INSERT ... SELECT that
  inserts nothing unless the TI is still `running` at try N under the
  caller's claim token: a worker whose claim was lost writes nothing, like
  every other write of its try (`store.claims`). It runs before the try's
  `success` outcome, so the value is there when the TI turns `success`; a
  retried call after a lost reply finds its own row (one row a try);
- `upstream` reads, in ONE statement, the result of a task in the reader's
  own run: it is visible only while that TI is `success` and the value was
  written at its current try. A cleared TI (back to `none`, its try number
  kept) hides its old value until a new try succeeds; a success that
  returned nothing (None) has no row: its result is None.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

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
class Upstream:
    """What a downstream may read of a task in its own run."""

    found: bool  # the run has a TI of that task
    state: TIState | None
    value: str | None  # JSON text; None: no value (not success, or it returned None)


def upstream(conn: Connection, ti_id: int, task_id: str) -> Upstream:
    """The result of `task_id` in the run of TI `ti_id` (see the invariants)."""
    me = ti.alias("me")
    up = ti.alias("up")
    stmt = (
        sa.select(up.c.state, res.c.value)
        .select_from(
            me.join(
                up, sa.and_(up.c.dag_run_id == me.c.dag_run_id, up.c.task_id == task_id)
            ).outerjoin(
                res,
                sa.and_(
                    res.c.task_instance_id == up.c.id,
                    res.c.try_number == up.c.try_number,
                    up.c.state == _S.SUCCESS.value,
                ),
            )
        )
        .where(me.c.id == ti_id)
    )
    row = conn.execute(stmt).first()
    if row is None:
        return Upstream(found=False, state=None, value=None)
    return Upstream(found=True, state=TIState(row.state), value=row.value)
