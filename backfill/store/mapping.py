"""A mapped task's TIs (`backfill.model.mapping`): made from its placeholder, and folded
back into it when what it maps over runs again. (store)

Invariants:
- a run holds, of a mapped task, exactly one TI of map index -1 or 0: its
  placeholder (-1: pending, not mapped yet; or skipped: mapped over nothing),
  or its first TI once mapped. As in Airflow the placeholder becomes map index
  0, keeping its history; `removed` rows are map indexes a shorter list
  dropped: history, never planned;
- `expand` is one conditional statement on the placeholder (pending, map
  index -1 -> 0; nothing else happens if it matches no row: someone else
  moved it), then the other TIs: those already there (`removed` by `fold`)
  back to `none`, the others inserted with the placeholder's pool, queue and
  retries;
- `fold` undoes it for a run whose sources were cleared with the mapped task:
  its first TI, just cleared, back to map index -1, its other just-cleared
  TIs -> `removed`, so the next pass maps it again over the sources' new
  results. A task whose first TI was not cleared (still queued) is not
  folded: its TIs run again as they were.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from backfill.model.states import TIState
from backfill.planning.snapshot import TIRow
from backfill.store.schema import task_instances

ti = task_instances
_S = TIState
_PENDING = [_S.NONE.value, _S.SCHEDULED.value]


def expand(conn: Connection, placeholder: TIRow, count: int, *, actor: str, now: datetime) -> bool:
    """Make `count` TIs of the mapped task whose placeholder is `placeholder` (count >= 1;
    zero is a skip, `tis.set_state`); False: the placeholder moved meanwhile."""
    taken = conn.execute(
        sa.update(ti)
        .where(
            ti.c.id == placeholder.id,
            ti.c.map_index == -1,
            ti.c.state == placeholder.state.value,
            ti.c.state.in_(_PENDING),
        )
        .values(map_index=0, updated_at=now, updated_by=actor)  # not a state change
        .returning(*_COPIED, ti.c.try_number)
    ).first()
    if taken is None:
        return False
    mine = sa.and_(ti.c.dag_run_id == placeholder.dag_run_id, ti.c.task_id == placeholder.task_id)
    conn.execute(
        sa.update(ti)
        .where(mine, ti.c.map_index.between(1, count - 1), ti.c.state == _S.REMOVED.value)
        .values(state=_S.NONE.value, end_date=None, updated_at=now, updated_by=actor)
    )
    there = set(conn.execute(sa.select(ti.c.map_index).where(mine, ti.c.map_index >= 0)).scalars())
    copied = {**taken._mapping, "max_tries": taken.max_tries - taken.try_number}  # its retries
    rows: list[dict[str, Any]] = [
        {**copied, "map_index": i, "state": _S.NONE.value, "try_number": 0}
        | {"updated_at": now, "updated_by": actor}
        for i in range(1, count)
        if i not in there
    ]
    if rows:
        conn.execute(sa.insert(ti), rows)
    return True


def fail(conn: Connection, placeholder: TIRow, error: str, *, actor: str, now: datetime) -> bool:
    """The placeholder -> `upstream_failed`, saying why it cannot be mapped (`NotMappable`)."""
    stmt = (
        sa.update(ti)
        .where(
            ti.c.id == placeholder.id,
            ti.c.state == placeholder.state.value,
            ti.c.state.in_(_PENDING),
        )
        .values(
            state=_S.UPSTREAM_FAILED.value,
            last_error=error,
            end_date=now,
            updated_at=now,
            updated_by=actor,
        )
    )
    return conn.execute(stmt).rowcount == 1


def fold(conn: Connection, targets: Sequence[tuple[int, str]], *, actor: str, now: datetime) -> int:
    """For each (run pk, mapped task) in `targets`, just cleared with its sources: its TIs
    back into its placeholder (see the invariants); how many tasks were folded."""
    if not targets:
        return 0
    first = conn.execute(
        sa.update(ti)
        .where(
            sa.tuple_(ti.c.dag_run_id, ti.c.task_id).in_(list(targets)),
            ti.c.map_index == 0,
            ti.c.state == _S.NONE.value,
        )
        .values(map_index=-1, updated_at=now, updated_by=actor)  # not a state change
        .returning(ti.c.dag_run_id, ti.c.task_id)
    ).all()
    folded = [(r.dag_run_id, r.task_id) for r in first]
    if folded:
        conn.execute(
            sa.update(ti)
            .where(
                sa.tuple_(ti.c.dag_run_id, ti.c.task_id).in_(folded),
                ti.c.map_index >= 1,
                ti.c.state == _S.NONE.value,
            )
            .values(state=_S.REMOVED.value, end_date=now, updated_at=now, updated_by=actor)
        )
    return len(folded)


# What a mapped TI copies from its placeholder.
_COPIED = (
    ti.c.dag_run_id,
    ti.c.dag_id,
    ti.c.task_id,
    ti.c.max_tries,
    ti.c.pool,
    ti.c.pool_slots,
    ti.c.queue,
    ti.c.priority_weight,
)
