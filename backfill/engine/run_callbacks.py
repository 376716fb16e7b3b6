"""A run's callbacks (`DAG(on_success_callback=..., on_failure_callback=...)`), run by
the coordinator after the pass that ended the run has committed.

Exactly once per run outcome, across coordinators: a run ends by ONE conditional
UPDATE from `running` that returns the rows it changed (`store.runs.finish_runs`),
and passes over a backfill serialise on its row lock; so of any number of
coordinators (HA, a restarted one, `backfill resume`) exactly one pass gets a
given run back, and only its coordinator calls the run's callbacks, only once
its commit is known to have landed.

At most once, not at least once: a coordinator that dies (or loses the database)
between that commit and the callback never calls it, and no one else will, since
the run is no longer `running` for anyone's UPDATE to win. Airflow's own run
callbacks are best-effort too (`DagRun.update_state` calls them in-process after
the state change, or hands them to the DAG processor). A commit whose outcome is
unknown (the reply was lost) is retried; the retry finds the run ended and calls
nothing: at most once again.

The context is the one Airflow gives: a TI's context (the DAG's last task in
topological order, as Airflow takes its run's last TI) with `reason`
(`success`, `task_failure`, `all_tasks_deadlocked`). Runs failed by a cancel, or
by the backfill's end before they started, get no callback: Airflow runs none
for a state set from outside (the CLI, the UI).

Hazard, a slow callback: it runs in the coordinator between passes, so it
delays the next pass, and the lease's renewal with it; past
`BACKFILL_HEARTBEAT_TIMEOUT` another coordinator may take over the drive
(safety never depends on the lease: `engine.coordinator`). Keep run callbacks
short, or hand the work to a queue.
"""

from __future__ import annotations

from collections.abc import Sequence

from backfill.callbacks import invoke
from backfill.engine.passes import RunEnd
from backfill.model.callbacks import CallbackContext, callback_context
from backfill.model.dag import DAG
from backfill.model.macros import context_for
from backfill.model.states import RunState
from backfill.planning.snapshot import Snapshot


def fire(dag: DAG, ended: Sequence[RunEnd], snapshot: Snapshot | None) -> None:
    """Call `dag`'s run callbacks for each run in `ended`, in order."""
    for end in ended:
        success = end.run.state is RunState.SUCCESS
        callbacks = dag.on_success_callback if success else dag.on_failure_callback
        if callbacks:
            event = "on_success_callback" if success else "on_failure_callback"
            key = f"{dag.dag_id}/{end.run.run_id}"
            invoke(callbacks, _context(dag, end, snapshot), event=event, key=key)


def _context(dag: DAG, end: RunEnd, snapshot: Snapshot | None) -> CallbackContext:
    run = end.run
    order = dag.topological_order()
    task_id = order[-1] if order else ""  # a DAG without tasks: its runs end at once
    tries = [
        t.try_number
        for t in (snapshot.tis if snapshot is not None else ())
        if t.dag_run_id == run.id and t.task_id == task_id
    ]
    ctx = context_for(
        dag,
        task_id=task_id,
        run_id=run.run_id,
        logical_date=run.logical_date,
        data_interval_start=run.data_interval_start,
        data_interval_end=run.data_interval_end,
        try_number=tries[0] if tries else 0,
        conf=run.conf,
    )
    return callback_context(ctx, reason=end.reason)
