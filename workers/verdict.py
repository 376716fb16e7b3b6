"""What Celery, and so Flower, is told about each delivery of a try (DESIGN section 6).

The database is the truth; this is its echo in Celery's task events, so an
operator watching Flower sees what happened to each delivery:
- a try that ended well (success, skipped, rescheduled) returns its outcome,
  as the task's result: SUCCESS;
- a try that failed (failed, up_for_retry), or a worker that could not record
  it, raises `TryFailed` with the error: FAILURE. It is an expected exception
  (`throws`): Celery logs it on one line, acks the message (acks_late acks a
  failure) and never retries; retries are TI states;
- a delivery that did nothing (it lost the claim race, its claim was taken
  away so its outcome was discarded, or it was malformed) sends a
  `task-ignored` event with the reason and raises Celery's `Ignore`, which
  acks without a success event: IGNORED, never a second SUCCESS.
Each verdict is given after the outcome is written (or refused), never before.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from celery.exceptions import Ignore


class Verdict(enum.Enum):
    DONE = "done"
    FAILED = "failed"
    NOOP = "no-op"


@dataclass(frozen=True)
class Report:
    verdict: Verdict
    text: str  # the TI key and what happened, e.g. `dag/task/date try 1: success`


class TryFailed(Exception):
    """A try failed (or could not be recorded): Flower shows FAILURE with this error."""


def tell_celery(task: Any, report: Report) -> str:
    """End the Celery task as `report` says: return its result, or raise."""
    if report.verdict is Verdict.FAILED:
        raise TryFailed(report.text)
    if report.verdict is Verdict.NOOP:
        task.send_event("task-ignored", reason=report.text)
        raise Ignore(report.text)
    return report.text
