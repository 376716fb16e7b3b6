"""Every backfill, newest first, with its progress: `backfill list` and
`GET /api/v1/backfills`.

Invariants:
- read in the caller's snapshot, bounded by `limit`: progress is counted for
  the backfills listed only, and the driver's report (for rate and ETA) is
  read for the running ones among them only.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Connection

from backfill.client.shapes import listed_json
from backfill.model.states import BackfillState
from backfill.planning.story import pace
from backfill.store import reports, status
from backfill.store.status import Listed


def listing(
    conn: Connection, state: BackfillState | None, *, limit: int | None, offset: int
) -> list[dict[str, Any]]:
    rows = status.list_backfills(conn, state, limit=limit, offset=offset)
    return [listed_json(row, pace=_pace(conn, row)) for row in rows]


def _pace(conn: Connection, row: Listed) -> tuple[float | None, float | None]:
    if row.state is not BackfillState.RUNNING:
        return None, None
    left = row.task_instances_total - row.task_instances_finished
    return pace(reports.read(conn, row.id), left=left)
