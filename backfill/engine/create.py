"""Write a planned backfill to the database, in ONE transaction.

Invariants:
- all or nothing: the backfill row, its new runs with one TI per task, and
  the runs it adopts for reprocessing are written together or not at all;
- the backfill starts `running` when a date is to run or reprocess (a
  coordinator picks it up), `success` when every date is skipped;
- new runs are `queued` (the coordinator starts them in a rolling window)
  with run id `backfill__<logical date ISO>` and one TI per task the plan
  selects (`--task-regex`); a TI's `max_tries` is its task's `retries`;
- a reprocessed run is taken over in place only if it is still finished, and
  only the TIs the plan names are cleared (`max_tries = try_number +
  retries`, Airflow's clear); its other TIs keep their outcome. Under
  `--rerun-failed-tasks` a TI is cleared only if it is still failed or
  upstream_failed: one that changed meanwhile is a conflict, never rerun;
- every TI created or cleared gets its task's options, with the pool
  replaced by `--pool` when given. That the pools exist is checked by the
  caller before anything is written (`plan.refuse_missing_pools`);
- the planner's statistics are refreshed once the rows are in
  (`runs.refresh_statistics`): a pass must not depend on autovacuum;
- a plan made from a stale read (someone created or took over a run for one
  of its dates meanwhile) writes nothing and raises `RunChangedMeanwhile`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from backfill.engine.errors import RunChangedMeanwhile
from backfill.model.dag import DAG
from backfill.model.mapping import foldable
from backfill.model.states import FAILED_STATES, BackfillState
from backfill.planning.backfill_plan import Action, BackfillPlan, PlannedRun
from backfill.store import adopt, mapping, reads, runs
from backfill.store.errors import RunConflict
from backfill.store.runs import NewRun, TaskSpec

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

CREATOR = "coordinator:create"  # the journal's actor for TIs cleared at creation


def create_backfill(engine: Engine, dag: DAG, plan: BackfillPlan, *, now: datetime) -> int:
    """Write `plan` as a new backfill of `dag`; its id."""
    if not plan.runs:
        raise ValueError("a backfill plan has at least one logical date")
    todo = [r for r in plan.runs if r.action is not Action.SKIP]
    dates = [r.logical_date for r in plan.runs]
    options = plan.options
    try:
        with engine.begin() as conn:
            backfill_id = runs.insert_backfill(
                conn,
                dag_id=dag.dag_id,
                fingerprint=dag.fingerprint,
                start=min(dates),
                end=max(dates),
                options=options.as_json(),
                conf=options.conf,
                now=now,
            )
            state = BackfillState.RUNNING if todo else BackfillState.SUCCESS
            # Cannot miss: this transaction inserted the row; no one else can see it yet.
            runs.set_backfill_state(conn, backfill_id, state, seen=BackfillState.QUEUED, now=now)
            with adopt.unique_conflicts():
                _insert_new(conn, backfill_id, dag, plan, now=now)
                _adopt(conn, backfill_id, dag, plan, now=now)
    except RunConflict as conflict:
        when = conflict.logical_date or _first_existing(engine, dag, todo)
        shown = f" for {when.astimezone(dag.timezone).isoformat()}" if when else ""
        raise RunChangedMeanwhile(
            f"a run{shown} was created meanwhile; re-run the command"
        ) from None
    with engine.begin() as conn:  # after the commit: ANALYZE sees the new rows
        runs.refresh_statistics(conn)
    return backfill_id


def task_specs(dag: DAG, *, pool: str | None = None) -> dict[str, TaskSpec]:
    """What each TI copies from its task's options, by task id; `pool` overrides every pool."""
    return {
        tid: TaskSpec(
            task_id=tid,
            pool=task.options.pool if pool is None else pool,
            pool_slots=task.options.pool_slots,
            queue=task.options.queue,
            priority_weight=task.options.priority_weight,
            max_tries=task.options.retries,
        )
        for tid, task in dag.tasks.items()
    }


def run_id_for(logical_date: datetime) -> str:
    return f"backfill__{logical_date.isoformat()}"


def _insert_new(
    conn: Connection, backfill_id: int, dag: DAG, plan: BackfillPlan, *, now: datetime
) -> None:
    new = (  # a generator: the store inserts them in batches
        NewRun(
            run_id=run_id_for(r.logical_date),
            logical_date=r.logical_date,
            data_interval_start=r.interval.start,
            data_interval_end=r.interval.end,
        )
        for r in plan.runs
        if r.action is Action.RUN
    )
    specs = task_specs(dag, pool=plan.options.pool)
    runs.insert_runs(
        conn,
        backfill_id=backfill_id,
        dag_id=dag.dag_id,
        runs=new,
        tasks=[specs[tid] for tid in plan.task_ids],
        conf=plan.options.conf,
        now=now,
    )


def _adopt(
    conn: Connection, backfill_id: int, dag: DAG, plan: BackfillPlan, *, now: datetime
) -> None:
    """Take over the runs to reprocess and clear the TIs the plan runs again."""
    wanted = {r.run_id: r for r in plan.runs if r.action is Action.REPROCESS and r.run_id}
    if not wanted:
        return
    adopted = adopt.adopt_runs(
        conn,
        backfill_id=backfill_id,
        dag_id=dag.dag_id,
        run_ids=sorted(wanted),
        conf=plan.options.conf,
        now=now,
    )
    for run_id, planned in wanted.items():
        if run_id not in adopted:  # no longer finished: another backfill took it
            raise RunConflict(planned.logical_date)
    specs = task_specs(dag, pool=plan.options.pool)
    targets, reset = _reset(conn, dag, wanted.values(), adopted, specs=specs, now=now)
    dates = {adopted[rid]: r.logical_date for rid, r in wanted.items()}
    missing = [t for t in targets if t not in reset]
    _insert_missing(conn, dag, missing, specs=specs, dates=dates, now=now)
    adopt.remove_unknown_tis(
        conn, dag_run_ids=sorted(dates), known_task_ids=list(specs), actor=CREATOR, now=now
    )


def _reset(
    conn: Connection,
    dag: DAG,
    planned: Iterable[PlannedRun],
    adopted: Mapping[str, int],
    *,
    specs: Mapping[str, TaskSpec],
    now: datetime,
) -> tuple[list[tuple[int, str]], set[tuple[int, str]]]:
    """Clear the TIs the plan runs again: (every target, those cleared).

    A `--rerun-failed-tasks` target is cleared only from failed/upstream_failed. A
    mapped task reset with its source is folded back into its placeholder.
    """
    by_kind: dict[bool, list[tuple[int, str]]] = {False: [], True: []}
    for r in planned:
        assert r.run_id is not None  # a reprocess always names its run
        by_kind[r.only_failed].extend((adopted[r.run_id], tid) for tid in r.task_ids)
    reset: set[tuple[int, str]] = set()
    for only_failed, targets in by_kind.items():
        done = adopt.reset_tis(
            conn,
            targets=targets,
            specs=specs,
            actor=CREATOR,
            now=now,
            from_states=FAILED_STATES if only_failed else None,
        )
        reset |= {(pk, task_id) for pk, task_id, _ in done}
    mapping.fold(conn, foldable(dag, reset), actor=CREATOR, now=now)
    return [*by_kind[False], *by_kind[True]], reset


def _insert_missing(
    conn: Connection,
    dag: DAG,
    targets: Sequence[tuple[int, str]],
    *,
    specs: Mapping[str, TaskSpec],
    dates: Mapping[int, datetime],
    now: datetime,
) -> None:
    """TIs for tasks added to the DAG since the run was made.

    A target that has a TI which could not be reset (it is not finished:
    someone else is running it) makes the insert fail: a conflict on that date.
    """
    by_run: dict[int, list[TaskSpec]] = {}
    for pk, tid in targets:
        by_run.setdefault(pk, []).append(specs[tid])
    for pk, tasks in by_run.items():
        try:
            with adopt.unique_conflicts():
                runs.insert_tis(conn, dag_id=dag.dag_id, dag_run_ids=[pk], tasks=tasks, now=now)
        except RunConflict:
            raise RunConflict(dates[pk]) from None


def _first_existing(engine: Engine, dag: DAG, todo: Sequence[PlannedRun]) -> datetime | None:
    """The first date planned as a new run that has a run now."""
    dates = [r.logical_date for r in todo if r.action is Action.RUN]
    with reads.reading(engine) as conn:
        found = reads.existing_runs(conn, dag.dag_id, dates)
    return next((d for d in dates if d in found), None)
