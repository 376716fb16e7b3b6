"""A try's return value on the worker: checked, stored fenced, and read by downstreams.

Invariants:
- a return value other than None is stored as JSON (no NaN, no objects JSON
  cannot spell), at most `BACKFILL_RESULT_MAX_BYTES`; anything else fails the
  try with an error saying what to return instead (retried like any failure);
- it is stored before the try's `success` outcome and fenced on the claim
  (`store.results.record`): a worker that lost its claim stores nothing, and
  its outcome is refused anyway;
- `ctx.result(task_id)` reads the value the task's current try stored, only
  while that TI is `success` (`store.results.upstream`); otherwise the
  reading try fails with `ResultMissing`, naming the task and its state. Of a
  mapped task it reads the list of its TIs' results.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from backfill.model.context import ResultMissing
from backfill.model.dag import DAG
from backfill.store import claims, results
from workers.process import Process


def encoded(value: object, *, task_id: str, max_bytes: int) -> tuple[str | None, str | None]:
    """(the value as JSON text, None), or (None, why it cannot be stored); None -> (None,
    None): a task that returns nothing has no result."""
    if value is None:
        return None, None
    try:
        text = json.dumps(value, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        return None, (
            f"ResultNotJSON: task {task_id!r} returned a value JSON cannot hold ({exc}); "
            "return dicts, lists, strings, numbers, booleans or None"
        )
    size = len(text.encode())
    if size > max_bytes:
        return None, (
            f"ResultTooLarge: task {task_id!r} returned {size} bytes of JSON, over "
            f"BACKFILL_RESULT_MAX_BYTES ({max_bytes}); store the data elsewhere and return "
            "where it is"
        )
    return text, None


def record(proc: Process, claim: claims.Claim, text: str, *, now: datetime) -> bool:
    """Store the try's result; False: the claim is lost (nothing stored)."""

    def once() -> bool:
        with proc.engine.connect() as conn:
            return results.record(conn, claim, text, now=now)

    return proc.db.run(once)


def reader(proc: Process, claim: claims.Claim, dag: DAG) -> Callable[[str], Any]:
    """`ctx.result` of the try `claim`: a task's result in the same run (of a mapped task,
    the list of its TIs' results: `store.results.read_value`)."""

    def read(task_id: str) -> Any:
        def once() -> list[results.TaskResult]:
            with proc.engine.connect() as conn:
                return results.upstream(conn, claim.ti_id, task_id)

        task = dag.tasks.get(task_id)
        mapped = task is not None and task.expansion is not None
        found = results.read_value(proc.db.run(once), mapped=mapped)
        if found.missing is not None:
            raise ResultMissing(
                f"task {task_id!r} has no result in run {claim.run_id}: {found.missing}; a "
                "task reads the results of its upstreams, which it runs after"
            )
        return found.value

    return read
