"""depends_on_past: may a TI run, given its task's state at the previous logical date? Pure.

DESIGN section 4 (and its deliberate difference from Airflow):
- the DAG's first logical date has no past (the tick before it is earlier
  than the DAG's start_date): it runs;
- on any other date the same task's TI at the previous logical date must have
  ended success or skipped. A gap (no run, or no TI of the task, at that
  date) blocks: the past is unknown. So does a past that ended failed or
  upstream_failed, or that can no longer run (still pending in a run that
  has ended). A past that is still pending or running is waited for;
- `--ignore-first-depends-on-past` lifts the rule on the backfill's first
  logical date only (the caller decides that; this module judges the past).

Every blocking reason starts with "depends_on_past:" and says what to do.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from backfill.model.dag import DAG
from backfill.model.schedule import Schedule
from backfill.model.states import ACTIVE, FAILED_STATES, RUN_FINISHED, SUCCEEDED, TIState
from backfill.planning.snapshot import PastTI, Snapshot

# Not started: the states in which depends_on_past (and trigger rules) are judged.
PENDING = frozenset({TIState.NONE, TIState.SCHEDULED})
IGNORE_FIRST_FLAG = "--ignore-first-depends-on-past"
# Grouped in a deadlock report: the TIs behind a blocked (or itself waiting) past.
BEHIND_BLOCKED_PAST = (
    "depends_on_past: waiting for the same task at the previous logical date, which cannot run"
)
WAITING_FOR_PAST = "depends_on_past: waiting for the same task at the previous logical date"


class Past(enum.Enum):
    OK = "ok"  # the TI may run as far as its past goes
    WAIT = "wait"  # the past may still end success or skipped
    BLOCKED = "blocked"  # it never will, as things stand: the reason says why


@dataclass(frozen=True)
class PastVerdict:
    past: Past
    reason: str = ""  # for BLOCKED: what is wrong and what to do


OK = PastVerdict(Past.OK)
WAIT = PastVerdict(Past.WAIT, WAITING_FOR_PAST)


def judge(task_id: str, previous: datetime, found: PastTI | None, dag: DAG) -> PastVerdict:
    """The verdict for a pending TI of `task_id` whose previous logical date is `previous`,
    where the same task's TI is `found` (None: no run, or no TI of the task, at that date)."""
    when = _show(previous, dag)
    if found is None or found.state is TIState.REMOVED:
        return PastVerdict(
            Past.BLOCKED,
            f"depends_on_past: task {task_id!r} has no run at {when} (outside the range?); "
            f"backfill from {when}, or pass {IGNORE_FIRST_FLAG} to run the range's first "
            "date without its past",
        )
    if found.state in SUCCEEDED:
        return OK
    if found.state in FAILED_STATES:
        return PastVerdict(
            Past.BLOCKED,
            f"depends_on_past: task {task_id!r} ended {found.state} at {when}; "
            "run that date again first (--reprocess failed)",
        )
    if found.state not in ACTIVE and found.run_state in RUN_FINISHED:
        # Nobody drives a finished run any more: a TI left pending in it stays so.
        return PastVerdict(
            Past.BLOCKED,
            f"depends_on_past: task {task_id!r} never ended at {when} (it is {found.state} "
            f"in a run that ended {found.run_state}); run that date again first "
            "(--reprocess failed)",
        )
    return WAIT


def previous_date(dag: DAG, logical_date: datetime) -> datetime | None:
    """The logical date before `logical_date`; None on the DAG's first date (no past)."""
    return _previous(dag.schedule, dag.start_date, logical_date)


def wanted_past(
    dag: DAG, snapshot: Snapshot, selects: Callable[[str], bool]
) -> tuple[set[str], set[datetime]]:
    """(task ids, dates) whose TIs the pending depends_on_past TIs of `snapshot` need from
    outside it: previous dates that are not running runs of the snapshot."""
    running = {run.logical_date for run in snapshot.runs}
    date_of = {run.id: run.logical_date for run in snapshot.runs}
    task_ids, dates = set(), set()
    for ti in snapshot.tis:
        task = dag.tasks.get(ti.task_id)
        if task is None or not task.options.depends_on_past or ti.state not in PENDING:
            continue
        previous = previous_date(dag, date_of[ti.dag_run_id])
        if previous is not None and previous not in running and selects(ti.task_id):
            task_ids.add(ti.task_id)
            dates.add(previous)
    return task_ids, dates


@functools.lru_cache(maxsize=4096)
def _previous(schedule: Schedule, start: datetime, logical_date: datetime) -> datetime | None:
    # Cached: every pass asks again for the same few running runs.
    interval = schedule.previous(logical_date, not_before=start)
    return None if interval is None else interval.logical_date


def _show(when: datetime, dag: DAG) -> str:
    return when.astimezone(dag.timezone).isoformat()
