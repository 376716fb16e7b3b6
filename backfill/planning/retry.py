"""When a failed try is retried. Pure: the failure time is passed in.

Airflow 2.10's `next_retry_datetime` (AIRFLOW_SEMANTICS.md section 4):
linear waits `retry_delay`; exponential waits between m and 2m-1 seconds,
m = ceil(retry_delay * 2^(try-1)), the spread a stable hash of the TI key
(so retries of many TIs do not stampede together), capped at a day and at
the task's `max_retry_delay`.
"""

from __future__ import annotations

import hashlib
import math
from datetime import datetime, timedelta

from backfill.model.task_options import TaskOptions

MAX_RETRY_DELAY = timedelta(days=1)


def retry_delay(
    options: TaskOptions, *, try_number: int, dag_id: str, task_id: str, logical_date: datetime
) -> timedelta:
    """How long after failed try `try_number` (1-based) the next try is due."""
    if not options.retry_exponential_backoff:
        return options.retry_delay
    base = options.retry_delay.total_seconds()
    # Past 2^64 every non-zero delay is far beyond the cap; bounding the exponent keeps
    # a task with many retries from overflowing a float or a timedelta.
    minimum = max(1, math.ceil(base * 2 ** min(try_number - 1, 64)))
    key = f"{dag_id}#{task_id}#{logical_date.isoformat()}#{try_number}"
    spread = int(hashlib.sha1(key.encode(), usedforsecurity=False).hexdigest(), 16) % minimum
    cap = MAX_RETRY_DELAY.total_seconds()
    delay = timedelta(seconds=min(minimum + spread, cap))
    if options.max_retry_delay is not None:
        delay = min(delay, options.max_retry_delay)
    return delay


def should_retry(*, try_number: int, max_tries: int) -> bool:
    """Whether failed try `try_number` leaves a try to make (`max_tries` = retries)."""
    return try_number <= max_tries
