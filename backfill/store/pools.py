"""Pools: named budgets of worker slots shared by every backfill (store).

Invariants:
- a pool name follows the task-id rules (1 to 250 letters, digits, '_', '.'
  or '-'); slots are >= 0, or -1 for unlimited (Airflow's convention), and
  fit the INTEGER column; both are checked before any SQL runs, so bad input
  writes nothing;
- occupancy is the sum of `pool_slots` of the pool's queued and running TIs,
  across every backfill (as the coordinator counts it in `store.tis`);
- `default_pool` always exists (migration 0001 creates it): it can be resized
  but never deleted, since every task without a `pool` uses it;
- a pool with queued or running TIs is never deleted; the refusal says how
  many there are. Every operation is one statement (plus, for a refused
  delete, one read to explain why).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NoReturn

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from backfill.model.states import ACTIVE, TIState
from backfill.model.task_options import DEFAULT_POOL, MAX_ID_LENGTH
from backfill.store.errors import PoolError
from backfill.store.schema import pools, task_instances

ti = task_instances
UNLIMITED = -1
MAX_SLOTS = 2**31 - 1  # the largest value of the INTEGER `slots` column
_NAME = re.compile(r"[\w.-]+")  # as task ids (Airflow's KEY_REGEX)
_ACTIVE = sorted(s.value for s in ACTIVE)


@dataclass(frozen=True, kw_only=True)
class Pool:
    name: str
    slots: int  # -1: unlimited
    description: str
    queued_slots: int  # slots held by queued TIs
    running_slots: int  # slots held by running TIs

    @property
    def occupied_slots(self) -> int:
        return self.queued_slots + self.running_slots

    @property
    def open_slots(self) -> int | None:
        """Slots free for new TIs (never negative); None when the pool is unlimited."""
        if self.slots == UNLIMITED:
            return None
        return max(self.slots - self.occupied_slots, 0)


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name) or len(name) > MAX_ID_LENGTH:
        raise PoolError(
            f"a pool name must be 1 to {MAX_ID_LENGTH} letters, digits, '_', '.' or '-', "
            f"got {name!r}"
        )
    return name


def check_slots(slots: int) -> int:
    if not UNLIMITED <= slots <= MAX_SLOTS:
        raise PoolError(
            f"pool slots must be a number from 0 to {MAX_SLOTS}, or -1 for unlimited, got {slots}"
        )
    return slots


def check_deletable(name: str) -> str:
    check_name(name)
    if name == DEFAULT_POOL:
        raise PoolError(
            f"{DEFAULT_POOL} cannot be deleted: every task without a pool uses it; "
            f"resize it with `backfill pools set {DEFAULT_POOL} SLOTS`"
        )
    return name


def upsert(conn: Connection, name: str, slots: int, *, description: str | None = None) -> None:
    """Create pool `name` or change its slots (and description, if given): ONE statement."""
    values = {
        "name": check_name(name),
        "slots": check_slots(slots),
        "description": description or "",
    }
    keep_description = description is None
    if conn.dialect.name == "postgresql":
        pg = postgresql.insert(pools).values(values)
        conn.execute(
            pg.on_conflict_do_update(
                index_elements=[pools.c.name], set_=_updates(pg.excluded, keep_description)
            )
        )
    else:
        lite = sqlite.insert(pools).values(values)
        conn.execute(
            lite.on_conflict_do_update(
                index_elements=[pools.c.name], set_=_updates(lite.excluded, keep_description)
            )
        )


def _updates(excluded: Any, keep_description: bool) -> dict[str, Any]:
    # Without --description an update keeps the pool's description.
    if keep_description:
        return {"slots": excluded.slots}
    return {"slots": excluded.slots, "description": excluded.description}


def list_all(conn: Connection) -> list[Pool]:
    """Every pool by name, with its occupancy: ONE statement."""

    def held_by(state: TIState) -> sa.ColumnElement[int]:
        slots = sa.case((ti.c.state == state.value, ti.c.pool_slots), else_=0)
        return sa.func.coalesce(sa.func.sum(slots), 0)

    active = sa.and_(ti.c.pool == pools.c.name, ti.c.state.in_(_ACTIVE))
    stmt = (
        sa.select(
            pools.c.name,
            pools.c.slots,
            pools.c.description,
            held_by(TIState.QUEUED).label("queued_slots"),
            held_by(TIState.RUNNING).label("running_slots"),
        )
        .select_from(pools.outerjoin(ti, active))
        .group_by(pools.c.name, pools.c.slots, pools.c.description)
        .order_by(pools.c.name)
    )
    return [
        Pool(
            name=r.name,
            slots=r.slots,
            description=r.description,
            queued_slots=int(r.queued_slots),
            running_slots=int(r.running_slots),
        )
        for r in conn.execute(stmt)
    ]


def delete(conn: Connection, name: str) -> None:
    """Delete pool `name` unless it is `default_pool` or has queued or running TIs."""
    check_deletable(name)
    if conn.dialect.name == "postgresql":
        # Under READ COMMITTED the DELETE's NOT EXISTS reads the snapshot its
        # statement starts with. A coordinator queueing into this pool holds
        # the row (store.tis.lock_limits) until it commits: waiting for that
        # lock first makes the DELETE's snapshot include what it queued.
        conn.execute(sa.select(pools.c.name).where(pools.c.name == name).with_for_update())
    in_use = sa.exists().where(ti.c.pool == name, ti.c.state.in_(_ACTIVE))
    stmt = sa.delete(pools).where(pools.c.name == name, ~in_use).returning(pools.c.name)
    if conn.execute(stmt).one_or_none() is None:
        _refuse_delete(conn, name)


def _refuse_delete(conn: Connection, name: str) -> NoReturn:
    exists = conn.execute(sa.select(pools.c.name).where(pools.c.name == name)).scalar()
    if exists is None:
        raise PoolError(f"no pool named {name!r}; see `backfill pools list`")
    count = conn.execute(
        sa.select(sa.func.count()).where(ti.c.pool == name, ti.c.state.in_(_ACTIVE))
    ).scalar_one()
    raise PoolError(
        f"pool {name!r} is in use by {count} queued or running task instance"
        f"{'' if count == 1 else 's'}; delete it once they have finished"
    )


def missing(conn: Connection, names: Iterable[str]) -> list[str]:
    """Those of `names` that are not pools, sorted: ONE statement (for refusing a backfill)."""
    wanted = set(names)
    if not wanted:
        return []
    found = conn.execute(sa.select(pools.c.name).where(pools.c.name.in_(wanted))).scalars()
    return sorted(wanted - set(found))
