"""The report a backfill's driver keeps with it (`backfills.report`). (store)

The report is a JSON document the engine composes (`planning.story`); the
store only keeps it. Writing it never changes the backfill's state or
`updated_at` (which says when its state last changed, and `db clean` reads):
it is one UPDATE of one column, in the writer's own short transaction.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from backfill.store.schema import backfills


def write(conn: Connection, backfill_id: int, report: dict[str, Any] | None) -> None:
    """Keep `report` (None: forget it) with the backfill."""
    conn.execute(sa.update(backfills).where(backfills.c.id == backfill_id).values(report=report))


def read(conn: Connection, backfill_id: int) -> dict[str, Any] | None:
    """The backfill's report, or None if none was written (or no such backfill)."""
    stmt = sa.select(backfills.c.report).where(backfills.c.id == backfill_id)
    found = conn.execute(stmt).scalar_one_or_none()
    return found if isinstance(found, dict) else None
