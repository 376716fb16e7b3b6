"""One task instance with its tries: the web page's TI page and
`GET /api/v1/backfills/{id}/task_instances/{task_id}/{logical_date}`.

Invariants:
- read in the caller's snapshot; the TI is found as `backfill logs` finds it
  (`client.logs.find_ti`: a date without an offset is UTC, a date alone
  matches the one run that UTC day);
- the TI is the row of `backfill tasks -o json` (`shapes.task_json_text`), the
  same shape, with its tries added: each claimed try with who claimed it,
  when, and how and when it ended, from the transition journal;
- a mapped task's TI is found by its map index (`map_index`; a mapped task
  without one is a `UserError` naming them), and lists its `siblings`: every
  TI of that task in that run with a map index, `removed` ones included, as
  `{"map_index", "state"}` (empty for a task that is not mapped).
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.engine import Connection

from backfill.client.logs import find_ti, task_on
from backfill.client.shapes import iso, task_json_text
from backfill.store import grid, logs, status


def ti_json(
    conn: Connection, backfill_id: int, task_id: str, date: str, *, map_index: int | None = None
) -> dict[str, Any]:
    target = find_ti(conn, backfill_id, task_id, date, map_index=map_index)
    where = status.TaskFilter(
        task_ids=frozenset([task_id]),
        start=target.logical_date,
        end=target.logical_date,
        map_index=target.map_index,
    )
    row = next(status.task_rows(conn, backfill_id, where, limit=1, offset=0))
    tries = logs.every_try(conn, target.ti_id)
    siblings = logs.map_states(conn, target.dag_run_id, task_id)
    return {
        **json.loads(task_json_text(row)),
        "backfill_id": backfill_id,
        "siblings": [{"map_index": i, "state": state} for i, state in siblings.items()],
        "tries": [
            {
                "try_number": number,
                "claimed_by": history.claimed_by,
                "started": iso(history.claimed_at),
                "ended": iso(history.ended_at),
                "state": history.ended_as,
            }
            for number, history in sorted(tries.items())
        ],
    }


def shown_map_index(conn: Connection, backfill_id: int, task_id: str, date: str) -> int | None:
    """The TI the grid's cell of a mapped task shows (its most telling one, as the grid's
    `store.grid.fold`), for a TI page asked without a map index; None: not mapped there."""
    run_ti = task_on(conn, backfill_id, task_id, date)
    states = logs.map_states(conn, run_ti.dag_run_id, task_id)
    return grid.most_telling(states) if states else None
