"""Names shared by the bench and its workers: the no-op task and the Redis counters.

Kept apart from `benchmarks.worker_app`, which builds its Celery app from the
environment when imported: the bench itself must not.
"""

from __future__ import annotations

NOOP_TASK = "benchmarks.noop"
NOOP_DONE = "bench:noop_done"  # no-op tasks run
TI_TASKS_DONE = "bench:ti_tasks_done"  # engine tasks whose statement counts were flushed
WORKER_STATEMENTS = "bench:worker_statements"
WORKER_CHECKOUTS = "bench:worker_checkouts"
WORKER_CONNECTS = "bench:worker_connects"
WORKER_PINGS = "bench:worker_pings"
WORKER_PIDS = "bench:worker_pids"  # processes that have run an engine task
