"""Every row of the fault matrix, in the order of issue 11's list."""

from __future__ import annotations

from . import rows_broker, rows_coordinators, rows_partitions, rows_servers, rows_workers
from .matrix import Row

ORDER = (
    "worker-sigkill",
    "worker-sigstop",
    "published-twice",
    "visibility",
    "two-coordinators",
    "coordinator-kill-before",
    "coordinator-kill-after",
    "redis-restart",
    "purged",
    "partition-worker",
    "partition-coordinator",
    "partition-broker",
    "pg-storm",
    "pg-restart",
    "poison",
    "clock-behind",
    "clock-ahead",
    "warm-shutdown",
    "forged",
    "dag-changed",
)
_ALL = {
    row.key: row
    for module in (rows_workers, rows_broker, rows_coordinators, rows_partitions, rows_servers)
    for row in module.ROWS
}
assert set(_ALL) == set(ORDER), "every row is in ORDER, once"
ROWS: list[Row] = [_ALL[key] for key in ORDER]


def select(only: str) -> list[Row]:
    """The rows named in `only` (comma-separated keys), in matrix order; all if empty.
    `KeyError` naming what is unknown."""
    wanted = [key.strip() for key in only.split(",") if key.strip()]
    unknown = [key for key in wanted if key not in _ALL]
    if unknown:
        raise KeyError(f"unknown rows: {', '.join(unknown)}; known: {', '.join(ORDER)}")
    return [row for row in ROWS if not wanted or row.key in wanted]
