"""What a task callable receives, and the signals it may raise to end its try."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pendulum

from backfill.errors import BackfillError


@dataclass(frozen=True, kw_only=True)
class Context:
    """The task instance a callable runs for. `try_number` is 1 for the first try."""

    dag_id: str
    task_id: str
    run_id: str
    logical_date: pendulum.DateTime
    ds: str  # YYYY-MM-DD of logical_date in the DAG's timezone
    data_interval_start: pendulum.DateTime
    data_interval_end: pendulum.DateTime
    try_number: int
    conf: dict[str, Any] = field(default_factory=dict)


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
