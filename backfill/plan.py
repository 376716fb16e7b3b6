"""What a backfill would do, date by date, before anything is written. Pure: no I/O.

Invariants:
- one `PlannedRun` per logical date, in the order of the intervals given;
- the action per date follows Airflow 3's reprocess table
  (AIRFLOW_SEMANTICS.md section 9), kept literally in `_ACTIONS`: no run ->
  `run`; a queued/running run is in flight and always skipped; a finished run
  is skipped or reprocessed depending on `ReprocessPolicy`;
- `task_ids` are in the DAG's topological order and empty exactly for `skip`
  (a reprocess may find nothing left to run, e.g. a failed run whose TIs all
  succeeded later: it then runs no TI but the run is still requeued);
- `expand_range` refuses reversed, empty and absurdly long ranges before any
  caller builds a plan, without expanding an absurd range in full.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import pendulum

from backfill.dag import DAG
from backfill.errors import BadRange
from backfill.options import ReprocessPolicy, RunOptions
from backfill.schedule import DataInterval
from backfill.snapshot import ExistingRun
from backfill.states import SUCCEEDED, RunState

MAX_RUNS = 100_000


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

    @property
    def logical_date(self) -> pendulum.DateTime:
        return self.interval.logical_date


@dataclass(frozen=True)
class BackfillPlan:
    dag_id: str
    options: RunOptions
    runs: tuple[PlannedRun, ...]

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
    order = dag.topological_order()
    runs = tuple(
        _plan_one(interval, existing.get(interval.logical_date), order, options.reprocess)
        for interval in intervals
    )
    return BackfillPlan(dag_id=dag.dag_id, options=options, runs=runs)


def _plan_one(
    interval: DataInterval,
    run: ExistingRun | None,
    order: tuple[str, ...],
    policy: ReprocessPolicy,
) -> PlannedRun:
    if run is None:
        return PlannedRun(interval, Action.RUN, "no run exists", order)
    action = _ACTIONS[run.state][policy]
    if action is Action.SKIP:
        kind = "in flight" if run.state in _IN_FLIGHT else "already exists"
        return PlannedRun(interval, action, f"{kind}: run is {run.state}", (), run.run_id)
    if policy is ReprocessPolicy.FAILED:
        # Only what did not succeed; a task added to the DAG since has no TI and runs too.
        task_ids = tuple(t for t in order if run.ti_states.get(t) not in SUCCEEDED)
    else:
        task_ids = order
    reason = f"run is {run.state}; --reprocess {policy}"
    return PlannedRun(interval, action, reason, task_ids, run.run_id)


def expand_range(
    dag: DAG, start: pendulum.DateTime, end: pendulum.DateTime, *, max_runs: int = MAX_RUNS
) -> list[DataInterval]:
    """The intervals of `dag` with a logical date in `[start, end]`, or `BadRange`.

    The count is probed on growing windows from `start`: every interval of a
    window is also an interval of the whole range, so a window already over
    the cap proves the range is too long without expanding it all.
    """
    if start > end:
        raise BadRange(
            f"--start-date {_show(start, dag)} is after --end-date {_show(end, dag)}; "
            "the start must not be later than the end"
        )
    window = timedelta(hours=1)
    while True:
        probe_end = end if end - start <= window else start + window
        intervals = dag.schedule.intervals(start, probe_end)
        if len(intervals) > max_runs:
            raise BadRange(
                f"[{_show(start, dag)}, {_show(end, dag)}] holds more than {max_runs} runs of "
                f"DAG {dag.dag_id!r} (schedule {dag.schedule.describe()}); "
                "split it into smaller backfills"
            )
        if probe_end == end:
            break
        # Aim the next window just past the cap at the density seen so far, at
        # least doubling it: few probes, and little expanded beyond the cap.
        aim = window * ((max_runs + 1) * 1.1 / len(intervals)) if intervals else window
        window = max(window * 2, aim)
    if not intervals:
        raise BadRange(
            f"no logical date of DAG {dag.dag_id!r} (schedule {dag.schedule.describe()}) "
            f"falls in [{_show(start, dag)}, {_show(end, dag)}]; widen the range"
        )
    return intervals


def _show(when: pendulum.DateTime, dag: DAG) -> str:
    return when.in_timezone(dag.timezone).isoformat()
