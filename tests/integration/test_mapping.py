"""Dynamic task mapping on real workers (`mapping_flow`, tests/dags_integration/mapping.py).

`backfill run` over two dates with one `celery worker` on PostgreSQL, then
`backfill clear` and `backfill resume`:
- `double` maps over `numbers`' result at run time: one TI per element, each
  with its own `x` and map index, a failed first try retried per TI; `total`
  gets the list of their results; an empty list skips the mapped task and its
  downstream;
- `shout` maps over a literal list, `max_active_tis_per_dag=1` holding per TI:
  no two of its TIs ever overlap;
- a result that is not a list fails the placeholder with `NotMappable`;
- `backfill tasks -o json` lists each mapped TI with its map index and result;
- clearing `numbers` with its downstream maps `double` again over the new
  result (two elements instead of three); a clear of one map index of `double`
  (`--map-index 1`) runs that TI again with the element it had, and a new
  backfill of double alone reprocessing the date runs each of its TIs again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from support.private_redis import PrivateRedis
from support.processes import Coordinators, WorkerPool
from support.stack import Stack

DAY1, DAY2 = "2024-01-01", "2024-01-02"


def _tasks(coordinators: Coordinators, stack: Stack, backfill_id: int) -> dict[Any, Any]:
    out = coordinators.cli(stack, "tasks", str(backfill_id), "--limit", "0", "-o", "json")
    rows = json.loads(out.finish(60).stdout)
    return {(ti["logical_date"][:10], ti["task_id"], ti["map_index"]): ti for ti in rows}


def test_a_mapped_task_runs_one_ti_per_element_and_maps_again_when_cleared(
    pg_url: str,
    broker: PrivateRedis,
    tmp_path: Path,
    workers: WorkerPool,
    coordinators: Coordinators,
) -> None:
    # PostgreSQL only: the mapping's statements run on both backends in
    # tests/store/test_mapping.py, and a mapped task runs on SQLite in tests/cli/test_logs.py.
    stack = Stack.create(pg_url, broker, tmp_path)
    workers.start(stack, 1, concurrency=3)
    run = ["run", "mapping_flow", "-s", DAY1, "-e", DAY2, "--output", "json"]
    finished = coordinators.cli(stack, *run, "--continue-on-failures").finish(timeout=180)
    assert finished.code == 1, finished.output  # bad's placeholder fails
    backfill_id = json.loads(finished.stdout)["id"]

    doubles = [
        (e.ds, e.extra["map_index"], e.extra["x"], e.try_number)
        for e in stack.ledger.entries("double")
    ]
    assert sorted(doubles) == [
        (DAY1, 0, 1, 1),
        (DAY1, 1, 2, 1),
        (DAY1, 1, 2, 2),  # the failed first try of x=2, retried as its own TI
        (DAY1, 2, 3, 1),
    ]
    assert [(e.ds, e.extra["values"]) for e in stack.ledger.entries("total")] == [(DAY1, [2, 4, 6])]
    shouts = sorted(
        (e.at, e.event, e.extra["map_index"])
        for e in stack.ledger.entries()
        if e.event.startswith("shout") and e.ds == DAY1
    )
    assert [event for _, event, _ in shouts] == ["shout-start", "shout-end"] * 4, shouts
    assert not stack.ledger.entries("bad")
    assert not stack.ledger.entries("after_bad")

    rows = _tasks(coordinators, stack, backfill_id)
    assert [rows[DAY1, "double", i]["result"] for i in range(3)] == [2, 4, 6]
    assert rows[DAY1, "double", 1]["try_number"] == 2
    assert rows[DAY1, "total", -1]["result"] == 12
    assert [rows[DAY1, "shout", i]["result"] for i in range(4)] == ["A", "B", "C", "D"]
    assert (rows[DAY2, "double", -1]["state"], rows[DAY2, "total", -1]["state"]) == (
        "skipped",
        "skipped",
    )
    assert (DAY1, "double", -1) not in rows  # the placeholder became map index 0
    placeholder = rows[DAY1, "bad", -1]
    assert placeholder["state"] == "upstream_failed"
    assert placeholder["last_error"].startswith(
        "NotMappable: expand(x=...): the result of 'scalar' is int, not a list"
    )
    assert rows[DAY1, "after_bad", -1]["state"] == "upstream_failed"

    # numbers cleared with its downstream: its second try returns [10, 20].
    clear = ["clear", str(backfill_id), "--task-regex", "^numbers$", "-s", DAY1, "-e", DAY1]
    cleared = coordinators.cli(stack, *clear, "--downstream", "--yes", "-o", "json").finish(60)
    assert json.loads(cleared.stdout)["cleared"] == 5, cleared.output  # numbers, 3 doubles, total
    coordinators.cli(stack, "resume", str(backfill_id), "-o", "json").finish(timeout=180)
    rows = _tasks(coordinators, stack, backfill_id)
    assert [rows[DAY1, "double", i]["result"] for i in range(2)] == [20, 40]
    assert rows[DAY1, "double", 2]["state"] == "removed"  # the new list is shorter
    assert rows[DAY1, "total", -1]["result"] == 60
    assert stack.ledger.entries("total")[-1].extra["values"] == [20, 40]

    # double[1] alone: it runs again with the element it had, and nothing else does.
    before = len(stack.ledger.entries("double"))
    again = ["clear", str(backfill_id), "--task-regex", "^double$", "-s", DAY1, "-e", DAY1]
    refused = coordinators.cli(stack, *again, "--map-index", "-1", "--yes").finish(60)
    assert refused.code == 2, refused.output
    assert "--map-index -1 is not a map index" in refused.stderr
    cleared = coordinators.cli(stack, *again, "--map-index", "1", "--yes", "-o", "json").finish(60)
    assert json.loads(cleared.stdout)["cleared"] == 1, cleared.output
    coordinators.cli(stack, "resume", str(backfill_id), "-o", "json").finish(timeout=180)
    rerun = [(e.extra["map_index"], e.extra["x"]) for e in stack.ledger.entries("double")]
    assert rerun[before:] == [(1, 20)]

    # A new backfill reprocessing the date, of double alone: the same two elements again,
    # the map index the shorter list dropped still removed.
    before = len(stack.ledger.entries("double"))
    rerun = ["run", "mapping_flow", "-s", DAY1, "-e", DAY1, "--task-regex", "^double$"]
    redone = coordinators.cli(stack, *rerun, "--reprocess", "completed", "-o", "json")
    assert redone.finish(timeout=180).code == 0, redone.output()
    rerun_doubles = stack.ledger.entries("double")[before:]
    assert sorted((e.extra["map_index"], e.extra["x"]) for e in rerun_doubles) == [(0, 10), (1, 20)]
    rows = _tasks(coordinators, stack, json.loads(redone.finish(1).stdout)["id"])
    assert {k[2]: v["state"] for k, v in rows.items() if k[1] == "double"} == {
        0: "success",
        1: "success",
        2: "removed",
    }
