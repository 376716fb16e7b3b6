"""Results between tasks on a real worker: TaskFlow, `ctx.result`, the cap, the refusals.

`backfill run` of `results_flow` (tests/dags_integration/results.py) over two
dates, one `celery worker` with BACKFILL_RESULT_MAX_BYTES=4096, on each backend:
transform gets extract's return value as its argument, load reads both with
`ctx.result`, `backfill tasks -o json` shows each TI's result, a value over the
cap or not JSON fails its try saying so, and a task reading the result of a task
that failed fails with `ResultMissing`.
"""

from __future__ import annotations

import json

from support.processes import Coordinators, WorkerPool
from support.stack import Stack

CAP = "4096"


def test_results_pass_between_tasks_and_bad_ones_fail_their_try(
    stack: Stack, workers: WorkerPool, coordinators: Coordinators
) -> None:
    workers.start(stack, 1, concurrency=2, env={"BACKFILL_RESULT_MAX_BYTES": CAP})
    run = ["run", "results_flow", "-s", "2024-01-01", "-e", "2024-01-02", "--output", "json"]
    finished = coordinators.cli(stack, *run, "--continue-on-failures").finish(timeout=120)
    assert finished.code == 1, finished.output  # too_big, not_json and reads_failed fail
    backfill_id = json.loads(finished.stdout)["id"]

    got = {e.ds: e.extra["got"] for e in stack.ledger.entries("transform")}
    assert got == {
        "2024-01-01": {"ds": "2024-01-01", "rows": [1, 2, 3, 1]},
        "2024-01-02": {"ds": "2024-01-02", "rows": [1, 2, 3, 2]},
    }
    loaded = {e.ds: e.extra for e in stack.ledger.entries("load")}
    assert loaded["2024-01-02"]["transform"] == {"ds": "2024-01-02", "total": 8}
    assert loaded["2024-01-02"]["extract"] == got["2024-01-02"]

    tasks = coordinators.cli(stack, "tasks", str(backfill_id), "--limit", "0", "-o", "json")
    rows = {
        (ti["logical_date"][:10], ti["task_id"]): ti for ti in json.loads(tasks.finish(60).stdout)
    }
    assert rows["2024-01-01", "transform"]["result"] == {"ds": "2024-01-01", "total": 7}
    assert rows["2024-01-01", "load"]["result"] is None  # returned nothing
    errors = {task: rows["2024-01-01", task]["last_error"] for task in ("too_big", "not_json")}
    assert errors["too_big"].startswith("ResultTooLarge: task 'too_big' returned 5002 bytes")
    assert "BACKFILL_RESULT_MAX_BYTES (4096)" in errors["too_big"]
    assert errors["not_json"].startswith("ResultNotJSON: task 'not_json' returned a value")
    assert rows["2024-01-01", "too_big"]["state"] == "failed"
    assert rows["2024-01-01", "too_big"]["result"] is None
    missing = rows["2024-01-01", "reads_failed"]
    assert missing["state"] == "failed"
    assert missing["last_error"].startswith("ResultMissing: task 'not_json' has no result in run")
