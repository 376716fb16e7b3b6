"""The coordinator lease on a backfill row. (store)

One coordinator at a time is expected to drive a backfill: it holds the
lease (owner, epoch, expiry) and renews it; a dead driver's lease lapses
after the heartbeat timeout and another takes over with epoch + 1. Safety
never depends on the lease: passes are serialised by `runs.lock_backfill`
and every transition is compare-and-set.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from backfill.store.schema import backfills

bf = backfills


def acquire_lease(
    conn: Connection, backfill_id: int, *, owner: str, now: datetime, ttl: timedelta
) -> int | None:
    """Take or renew the driver lease; the new epoch, or None while another holds it."""
    free = sa.or_(
        bf.c.lease_owner.is_(None), bf.c.lease_expires_at < now, bf.c.lease_owner == owner
    )
    stmt = (
        sa.update(bf)
        .where(bf.c.id == backfill_id, free)
        .values(
            lease_owner=owner,
            lease_epoch=sa.case(
                (bf.c.lease_owner == owner, bf.c.lease_epoch), else_=bf.c.lease_epoch + 1
            ),
            lease_expires_at=now + ttl,
        )
        .returning(bf.c.lease_epoch)
    )
    epoch = conn.execute(stmt).scalar_one_or_none()
    return None if epoch is None else int(epoch)


def release_lease(conn: Connection, backfill_id: int, *, owner: str) -> None:
    """Give up the lease if `owner` holds it. A miss is harmless: another coordinator took
    it over (it had expired), and only the holder may release it."""
    conn.execute(
        sa.update(bf)
        .where(bf.c.id == backfill_id, bf.c.lease_owner == owner)
        .values(lease_owner=None, lease_expires_at=None)
    )
