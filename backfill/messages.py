"""The Celery message that asks a worker to run one TI try: the doorbell.

A message says which try to run, nothing more: the database is the truth,
so a forged, stale or duplicated message can at worst lose a claim race and
be acknowledged as a no-op. Messages are JSON (pickle is never accepted);
`from_kwargs` refuses anything that is not exactly this shape.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any

from backfill.errors import BadMessage

TASK_NAME = "backfill.run_task_instance"
# A Celery stamp (header) on every message: `cancel --abort` revokes a backfill's
# messages still in the broker by it (`revoke_by_stamped_headers`).
BACKFILL_STAMP = "backfill_id"
_LEAST = {"ti_id": 0, "try_number": 0, "backfill_id": 0, "map_index": -1}  # integer fields


@dataclass(frozen=True, kw_only=True)
class TaskMessage:
    ti_id: int
    try_number: int
    backfill_id: int
    dag_id: str
    task_id: str
    logical_date: str  # ISO 8601, UTC; for people reading Flower and logs
    map_index: int = -1  # a mapped task's element; -1: not mapped

    def kwargs(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """How Flower and the logs show this task: `dag/task/2016-01-01T00:00:00+00:00 try 1`,
        a mapped one's task as `task[3]`."""
        task = self.task_id if self.map_index < 0 else f"{self.task_id}[{self.map_index}]"
        return f"{self.dag_id}/{task}/{self.logical_date} try {self.try_number}"

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any]) -> TaskMessage:
        expected = {f.name: f.type for f in fields(cls)}
        # map_index may be absent: a coordinator older than mapping sends none (-1).
        required = {f.name for f in fields(cls) if f.default is MISSING}
        if not required <= set(kwargs) <= set(expected):
            raise BadMessage(f"expected keys {sorted(expected)}, got {sorted(kwargs)}")
        for name, value in kwargs.items():
            kind = expected[name]
            if kind == "str":
                if not isinstance(value, str):
                    raise BadMessage(f"{name} must be a string, got {value!r}")
            elif not isinstance(value, int) or isinstance(value, bool) or value < _LEAST[name]:
                raise BadMessage(f"{name} must be an integer >= {_LEAST[name]}, got {value!r}")
        return cls(**kwargs)
