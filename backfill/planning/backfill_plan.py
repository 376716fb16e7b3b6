"""What a backfill would do, date by date, before anything is written. Pure: no I/O.

Invariants:
- one `PlannedRun` per logical date, in the order the runs start: oldest
  first, newest first with `--run-backwards`;
- the action per date follows Airflow 3's reprocess table
  (AIRFLOW_SEMANTICS.md section 9), kept literally in `_ACTIONS`: no run ->
  `run`; a queued/running run is in flight and always skipped; a finished run
  is skipped or reprocessed depending on `ReprocessPolicy`. A finished run
  the table skips is still reprocessed by `--rerun-failed-tasks` when some
  of its TIs failed: exactly those TIs run again (`PlannedRun.only_failed`);
- `task_ids` are in the DAG's topological order, only tasks `--task-regex`
  selects, and empty exactly for `skip` (a reprocess may find nothing left
  to run, e.g. a failed run whose TIs all succeeded later: it then runs no
  TI but the run is still requeued);
- options that cannot work with the DAG are refused here, before anything is
  read or written: a `--task-regex` selecting no task, `--run-backwards` with
  a selected task that has `depends_on_past`. Unknown pools are refused by
  `refuse_missing_pools` once the caller has read which pools exist;
- `expand_range` refuses reversed, empty and absurdly long ranges before any
  caller builds a plan, without expanding an absurd range in full.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import pendulum

from backfill.model.dag import DAG
from backfill.model.errors import BadRange
from backfill.model.schedule import DataInterval
from backfill.model.states import FAILED_STATES, SUCCEEDED, RunState
from backfill.planning.errors import (
    BackwardsWithDependsOnPast,
    NoTaskSelected,
    UnknownPool,
)
from backfill.planning.run_options import Order, ReprocessPolicy, RunOptions
from backfill.planning.snapshot import ExistingRun

MAX_RUNS = 1_000_000  # a guard against a mistyped range, not a design limit


class Action(enum.StrEnum):
    RUN = "run"  # no run exists: create it
    SKIP = "skip"
    REPROCESS = "reprocess"  # clear an existing run in place and run it again


_R, _P, _A = RunState, ReprocessPolicy, Action
# Airflow 3's table: existing run state x --reprocess -> action.
_ACTIONS: Mapping[RunState, Mapping[ReprocessPolicy, Action]] = {
    _R.QUEUED: {_P.NONE: _A.SKIP, _P.FAILED: _A.SKIP, _P.COMPLETED: _A.SKIP},
    _R.RUNNING: {_P.NONE: _A.SKIP, _P.FAILED: _A.SKIP, _P.COMPLETED: _A.SKIP},
    _R.FAILED: {_P.NONE: _A.SKIP, _P.FAILED: _A.REPROCESS, _P.COMPLETED: _A.REPROCESS},
    _R.SUCCESS: {_P.NONE: _A.SKIP, _P.FAILED: _A.SKIP, _P.COMPLETED: _A.REPROCESS},
}
_IN_FLIGHT = frozenset({RunState.QUEUED, RunState.RUNNING})


@dataclass(frozen=True)
class PlannedRun:
    interval: DataInterval
    action: Action
    reason: str
    task_ids: tuple[str, ...]  # the TIs it would run, upstreams first
    run_id: str | None = None  # the existing run's id, None when there is none
    # `--rerun-failed-tasks`: only the failed/upstream_failed TIs named run again,
    # and only if they are still failed when the backfill is created.
    only_failed: bool = False

    @property
    def logical_date(self) -> pendulum.DateTime:
        return self.interval.logical_date


@dataclass(frozen=True)
class BackfillPlan:
    dag_id: str
    options: RunOptions
    runs: tuple[PlannedRun, ...]
    task_ids: tuple[str, ...]  # the tasks `--task-regex` selects, topological order
    # Every pool the backfill needs -> who needs it (task ids, or "--pool").
    pools: Mapping[str, tuple[str, ...]]

    def count(self, action: Action) -> int:
        return sum(1 for r in self.runs if r.action is action)

    @property
    def task_instance_count(self) -> int:
        return sum(len(r.task_ids) for r in self.runs)

    def totals(self) -> dict[str, int]:
        """Runs per action, all runs, and the TIs that would run."""
        return {
            **{action.value: self.count(action) for action in Action},
            "runs": len(self.runs),
            "task_instances": self.task_instance_count,
        }


def plan_backfill(
    dag: DAG,
    intervals: Sequence[DataInterval],
    existing: Mapping[datetime, ExistingRun],
    options: RunOptions,
) -> BackfillPlan:
    """Decide, per logical date, whether to run, skip or reprocess, and which TIs would run."""
    selected = check_options(dag, options)
    ordered = reversed(intervals) if options.order is Order.BACKWARD else intervals
    runs = tuple(
        _plan_one(interval, existing.get(interval.logical_date), selected, options)
        for interval in ordered
    )
    return BackfillPlan(
        dag_id=dag.dag_id,
        options=options,
        runs=runs,
        task_ids=selected,
        pools=required_pools(dag, selected, options),
    )


def check_options(dag: DAG, options: RunOptions) -> tuple[str, ...]:
    """Refuse options that cannot work with `dag`; the tasks selected, upstreams first."""
    selected = selected_task_ids(dag, options)
    check_order(dag, selected, options)
    return selected


def selected_task_ids(dag: DAG, options: RunOptions) -> tuple[str, ...]:
    """The tasks the backfill runs, upstreams first; `NoTaskSelected` if none."""
    selected = tuple(t for t in dag.topological_order() if options.selects(t))
    if not selected:
        raise NoTaskSelected(
            f"--task-regex {options.task_regex!r} matches no task of DAG {dag.dag_id!r}; "
            f"its tasks are: {', '.join(dag.topological_order())}"
        )
    return selected


def check_order(dag: DAG, selected: Sequence[str], options: RunOptions) -> None:
    """Refuse `--run-backwards` when a selected task has `depends_on_past`."""
    if options.order is not Order.BACKWARD:
        return
    past = [t for t in selected if dag.tasks[t].options.depends_on_past]
    if past:
        # Airflow's own message (backfill_job_runner), so users find it.
        raise BackwardsWithDependsOnPast(
            "You cannot backfill backwards because one or more tasks depend_on_past: "
            + ", ".join(past)
        )


def required_pools(
    dag: DAG, selected: Sequence[str], options: RunOptions
) -> dict[str, tuple[str, ...]]:
    """Pool -> who needs it: the `--pool` override, else every pool a selected task declares.

    Airflow checks the declared pools even with `--pool`; here the override
    replaces them (no TI will use them), so it can route around a missing pool.
    """
    if options.pool is not None:
        return {options.pool: ("--pool",)}
    needed: dict[str, list[str]] = {}
    for task_id in selected:
        needed.setdefault(dag.tasks[task_id].options.pool, []).append(task_id)
    return {pool: tuple(users) for pool, users in sorted(needed.items())}


def refuse_missing_pools(plan: BackfillPlan, missing: Sequence[str]) -> None:
    """`UnknownPool` naming each missing pool, who needs it, and how to create it."""
    if not missing:
        return
    named = "; ".join(f"pool {p!r} (needed by {_some(plan.pools.get(p, ()))})" for p in missing)
    verb, them = ("does", "it") if len(missing) == 1 else ("do", "them")
    create = "; ".join(f"backfill pools set {p} SLOTS" for p in missing)
    raise UnknownPool(f"{named} {verb} not exist; create {them} first: {create}")


def _some(names: Sequence[str], shown: int = 5) -> str:
    more = len(names) - shown
    return ", ".join(names[:shown]) + (f" and {more} more" if more > 0 else "")


def _plan_one(
    interval: DataInterval,
    run: ExistingRun | None,
    selected: tuple[str, ...],
    options: RunOptions,
) -> PlannedRun:
    if run is None:
        return PlannedRun(interval, Action.RUN, "no run exists", selected)
    policy = options.reprocess
    action = _ACTIONS[run.state][policy]
    if action is Action.SKIP:
        return _skip_or_rerun_failed(interval, run, selected, options)
    if policy is ReprocessPolicy.FAILED:
        # Only what did not succeed; a task added to the DAG since has no TI and runs too.
        task_ids = tuple(t for t in selected if run.ti_states.get(t) not in SUCCEEDED)
    else:
        task_ids = selected
    reason = f"run is {run.state}; --reprocess {policy}"
    return PlannedRun(interval, action, reason, task_ids, run.run_id)


def _skip_or_rerun_failed(
    interval: DataInterval,
    run: ExistingRun,
    selected: tuple[str, ...],
    options: RunOptions,
) -> PlannedRun:
    """A run the reprocess table skips; `--rerun-failed-tasks` takes over its failed TIs."""
    if run.state in _IN_FLIGHT:
        return PlannedRun(interval, Action.SKIP, f"in flight: run is {run.state}", (), run.run_id)
    failed = tuple(t for t in selected if run.ti_states.get(t) in FAILED_STATES)
    if options.rerun_failed_tasks and failed:
        reason = f"--rerun-failed-tasks: {len(failed)} failed TI{'' if len(failed) == 1 else 's'}"
        return PlannedRun(interval, Action.REPROCESS, reason, failed, run.run_id, only_failed=True)
    reason = f"already exists: run is {run.state}"
    return PlannedRun(interval, Action.SKIP, reason, (), run.run_id)


def expand_range(
    dag: DAG, start: pendulum.DateTime, end: pendulum.DateTime, *, max_runs: int = MAX_RUNS
) -> list[DataInterval]:
    """The intervals of `dag` with a logical date in `[start, end]`, or `BadRange`.

    The dates are counted before any is expanded (`Schedule.count`: ticks
    only, in constant memory, stopping one past the cap), so a range over the
    cap is refused without building its intervals.
    """
    if start > end:
        raise BadRange(
            f"--start-date {_show(start, dag)} is after --end-date {_show(end, dag)}; "
            "the start must not be later than the end"
        )
    if dag.schedule.count(start, end, limit=max_runs) > max_runs:
        raise BadRange(
            f"[{_show(start, dag)}, {_show(end, dag)}] holds more than {max_runs} runs of "
            f"DAG {dag.dag_id!r} (schedule {dag.schedule.describe()}); "
            "split it into smaller backfills"
        )
    intervals = dag.schedule.intervals(start, end)
    if not intervals:
        raise BadRange(
            f"no logical date of DAG {dag.dag_id!r} (schedule {dag.schedule.describe()}) "
            f"falls in [{_show(start, dag)}, {_show(end, dag)}]; widen the range"
        )
    return intervals


def _show(when: pendulum.DateTime, dag: DAG) -> str:
    return when.in_timezone(dag.timezone).isoformat()
