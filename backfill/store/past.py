"""The past of depends_on_past tasks: their TIs at earlier logical dates. (store)

Invariants:
- ONE statement, whatever the number of tasks and dates;
- it looks at every run of the DAG, whichever backfill (or none) it belongs
  to: the past a TI depends on is the DAG's, not the backfill's;
- a date without a run, or a run without a TI of the task, is absent from
  the result (the planner reads that as a gap); `removed` TIs are returned
  as such; a mapped task's TIs at one date come back as one (`PastTI.of`).
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from backfill.model.states import RunState, TIState
from backfill.planning.snapshot import PastTI
from backfill.store.schema import dag_runs, task_instances

ti, run = task_instances, dag_runs


def past_states(
    conn: Connection, *, dag_id: str, task_ids: Collection[str], dates: Collection[datetime]
) -> dict[tuple[str, datetime], PastTI]:
    """(task_id, logical_date) -> that TI and its run's state, for `task_ids` x `dates`.

    Dates are the previous logical dates of a backfill's running runs: as
    many as its window of active runs, so the IN lists stay short.
    """
    if not task_ids or not dates:
        return {}
    stmt = (
        sa.select(ti.c.task_id, run.c.logical_date, ti.c.state, run.c.state.label("run_state"))
        .select_from(run.join(ti, ti.c.dag_run_id == run.c.id))
        .where(
            run.c.dag_id == dag_id,
            run.c.logical_date.in_(sorted(set(dates))),
            ti.c.task_id.in_(sorted(set(task_ids))),
        )
    )
    found: dict[tuple[str, datetime], tuple[list[TIState], RunState]] = {}
    for r in conn.execute(stmt):  # a mapped task has several TIs at one date
        states, _ = found.setdefault((r.task_id, r.logical_date), ([], RunState(r.run_state)))
        states.append(TIState(r.state))
    return {key: PastTI.of(states, run_state) for key, (states, run_state) in found.items()}
