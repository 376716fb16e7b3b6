"""A pass's mapped tasks: each placeholder the planner found ready to run is mapped over
what its sources hold now (`backfill.model.mapping`, `store.mapping`).

Invariants:
- a placeholder becomes its `n` TIs (map indexes 0..n-1), or `skipped` for
  n = 0, or `upstream_failed` with `last_error` saying why when there is
  nothing to map over (a source without a result, not a list, or more than
  `BACKFILL_MAX_MAP_LENGTH` elements); each is one conditional statement on
  the placeholder as the snapshot saw it, so a placeholder changed meanwhile
  is left alone and decided again next pass;
- the sources are read in the pass's transaction, after the snapshot: they
  ended before it (the planner saw the task ready), and a result never
  changes under a `success` TI.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from backfill.model.dag import DAG
from backfill.model.mapping import NotMappable
from backfill.model.states import TIState
from backfill.planning.snapshot import TIRow
from backfill.store import mapping, results, tis


def expand_mapped(
    conn: Connection,
    placeholders: Sequence[TIRow],
    dag: DAG,
    *,
    cap: int,
    actor: str,
    now: datetime,
) -> int:
    """Map each of `placeholders` (see the invariants); how many changed."""
    changed = 0
    for ti in placeholders:
        expansion = dag.tasks[ti.task_id].expansion
        assert expansion is not None  # the planner hands over mapped tasks' placeholders only

        def read(task_id: str, run: int = ti.dag_run_id) -> Any:
            mapped = dag.tasks[task_id].expansion is not None
            found = results.read_value(results.of_run(conn, run, task_id), mapped=mapped)
            if found.missing is not None:
                raise NotMappable(f"{task_id!r} has no result to map over: {found.missing}")
            return found.value

        try:
            count = expansion.length(read, cap=cap)
        except NotMappable as exc:
            changed += mapping.fail(conn, ti, f"NotMappable: {exc}", actor=actor, now=now)
            continue
        if count == 0:
            changed += len(tis.set_state(conn, [ti], TIState.SKIPPED, actor=actor, now=now))
        else:
            changed += mapping.expand(conn, ti, count, actor=actor, now=now)
    return changed
