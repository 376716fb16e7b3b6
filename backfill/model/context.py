"""What a task callable receives, and the signals it may raise to end its try."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pendulum

from backfill.errors import BackfillError


@dataclass(frozen=True, kw_only=True)
class Context:
    """The task instance a callable runs for. `try_number` is 1 for the first try.

    The date strings are Airflow's template variables of the same names, read
    on the DAG's timezone's wall clock (Airflow reads them in UTC; here `ds`
    and `ts` agree with the dates typed on the command line). `logical_date`
    stays in UTC, as in Airflow; the data interval is in the DAG's timezone.
    Build one with `backfill.model.macros.context_for`, which keeps them
    consistent: `ts[:10] == ds`, and `next_ds` is `data_interval_end`'s date.
    """

    dag_id: str
    task_id: str
    run_id: str
    logical_date: pendulum.DateTime  # UTC
    ds: str  # YYYY-MM-DD of logical_date in the DAG's timezone
    ts: str  # logical_date in the DAG's timezone, ISO 8601 with its offset
    prev_ds: str | None  # YYYY-MM-DD of the schedule's logical date before this one
    next_ds: str | None  # YYYY-MM-DD of the schedule's logical date after this one
    data_interval_start: pendulum.DateTime  # in the DAG's timezone
    data_interval_end: pendulum.DateTime  # in the DAG's timezone
    try_number: int
    map_index: int = -1  # a mapped TI's element (`task.expand`); -1: the task is not mapped
    conf: dict[str, Any] = field(default_factory=dict)  # the run's conf, `{}` when none
    params: dict[str, Any] = field(default_factory=dict)  # the DAG's params, conf on top
    # Reads a task's result in this run (given by the worker: the model does no I/O).
    results: Callable[[str], Any] | None = field(default=None, repr=False, compare=False)

    def result(self, task_id: str) -> Any:
        """The return value of task `task_id` in this run (None if it returned nothing);
        `ResultMissing` while that task has not succeeded (a cleared one has not, until
        its new try succeeds). Of a mapped task: the list of its TIs' results, in map
        index order, of those that succeeded (`[]` when it mapped over nothing)."""
        if self.results is None:
            raise ResultMissing(
                f"{task_id!r}: results are read by a worker running the task; this Context "
                "has no reader"
            )
        return self.results(task_id)

    @property
    def ds_nodash(self) -> str:
        """`ds` as YYYYMMDD."""
        return self.ds.replace("-", "")

    @property
    def ts_nodash(self) -> str:
        """`ts` as YYYYMMDDTHHMMSS: no separators, no fraction, no offset (Airflow's)."""
        return self.ts[:19].replace("-", "").replace(":", "")

    @property
    def prev_ds_nodash(self) -> str | None:
        """`prev_ds` as YYYYMMDD, or None."""
        return None if self.prev_ds is None else self.prev_ds.replace("-", "")

    @property
    def next_ds_nodash(self) -> str | None:
        """`next_ds` as YYYYMMDD, or None."""
        return None if self.next_ds is None else self.next_ds.replace("-", "")


class ResultMissing(BackfillError):
    """A task asked for the result of a task that has not succeeded in its run."""


class TaskSignal(BackfillError):
    """Raised by a task callable to end its try in a state other than success/failed."""


class Skip(TaskSignal):
    """End this task instance as `skipped`."""


class Reschedule(TaskSignal):
    """Free the worker slot and run this try again after `delay` (sensors)."""

    def __init__(self, delay: timedelta | float) -> None:
        seconds = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
        if seconds < 0:
            raise ValueError(f"Reschedule delay must not be negative, got {seconds}s")
        super().__init__(f"reschedule in {seconds:g}s")
        self.delay_seconds = float(seconds)
