"""A mapped task through the API and pages of `backfill web` (DESIGN section 7).

One backfill of `mapping_flow` (tests/dags_integration/mapping.py) on one date,
driven to its end by a `backfill coordinator` and a real worker: `double` maps over
`numbers`' [1, 2, 3] (its x=2 succeeds on its second try), `shout` over four words,
`bad`'s placeholder cannot be mapped. Then:
- a mapped task's TI is asked for by its map index (`map_index=N`), the same TI
  `backfill tasks` and `backfill logs -m N` give; without one, a 400 names the
  map indexes; an index it has not, a 404;
- the grid folds a mapped task's cell: the state of its most telling TI, which
  TI that is, and its TIs counted by state, the `removed` placeholder left out;
- the TI page of a mapped task asked without a map index redirects to that TI.
"""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import ENDED, LiveSite

DAY = "2024-01-01"


@pytest.fixture(scope="module")
def ended(live: LiveSite) -> int:
    backfill_id = live.create("mapping_flow", DAY, DAY)
    assert live.wait_state(backfill_id, *ENDED) == "failed"  # bad's placeholder
    live.wait_settled(backfill_id)
    return backfill_id


def answer(live: LiveSite, path: str, **params: Any) -> tuple[int, Any]:
    with live.api() as api:
        got = api.get(f"/api/v1{path}", params=params)
    assert got.is_success or "Traceback" not in got.text  # a try's log may hold one
    return got.status_code, got.json()


def test_a_mapped_ti_and_its_log_are_asked_for_by_map_index(live: LiveSite, ended: int) -> None:
    ti = f"/backfills/{ended}/task_instances/double/{DAY}"
    code, one = answer(live, ti, map_index=1)
    assert code == 200, one
    rows = live.cli_json("tasks", str(ended), "--task-regex", "^double$", "--limit", "0")
    (row,) = [r for r in rows if r["map_index"] == 1]
    tries, siblings = one.pop("tries"), one.pop("siblings")
    assert one == {**row, "backfill_id": ended}
    assert (one["map_index"], one["result"], one["try_number"]) == (1, 4, 2)
    assert [t["state"] for t in tries] == ["up_for_retry", "success"]
    assert siblings == [{"map_index": i, "state": "success"} for i in range(3)]

    code, log = answer(live, f"{ti}/logs", map_index=1, try_number=1)
    assert code == 200, log
    assert log == live.cli_json("logs", str(ended), "double", "-d", DAY, "-m", "1", "--try", "1")
    assert (log["map_index"], log["state"]) == (1, "up_for_retry")
    assert "the first try of x=2 fails" in log["log"]

    code, plain = answer(live, f"/backfills/{ended}/task_instances/total/{DAY}")
    assert code == 200, plain
    assert (plain["map_index"], plain["siblings"], plain["result"]) == (-1, [], 12)

    for path in (ti, f"{ti}/logs"):
        code, error = answer(live, path)
        assert code == 400, error
        assert "is a mapped task with map indexes 0 to 2" in error["error"]
        assert "map_index=N" in error["error"]
        code, error = answer(live, path, map_index=3)
        assert code == 404, error
        assert "no map index 3: it has map indexes 0 to 2" in error["error"]
    code, error = answer(live, ti, map_index=-2)
    assert code == 422, error


def test_the_grid_folds_a_mapped_task_s_cell(live: LiveSite, ended: int) -> None:
    code, grid = answer(live, f"/backfills/{ended}/grid")
    assert code == 200, grid
    code_of = dict(zip(grid["states"], grid["codes"], strict=True))
    column = {task: i for i, task in enumerate(grid["tasks"])}
    (cells,) = grid["cells"]
    shown = {task: grid["states"][grid["codes"].index(cells[i])] for task, i in column.items()}
    assert shown == {
        "numbers": "success", "double": "success", "total": "success", "shout": "success",
        "scalar": "success", "bad": "upstream_failed", "after_bad": "upstream_failed",
    }  # fmt: skip
    success = code_of["success"]
    assert grid["mapped"] == sorted(
        [[0, column["double"], 0, f"{success}:3"], [0, column["shout"], 0, f"{success}:4"]]
    )


def test_a_mapped_task_s_page_opens_its_most_telling_ti(live: LiveSite, ended: int) -> None:
    page = f"/backfills/{ended}/tasks/double/{DAY}"
    with live.web.client(token="s3cret-web-token") as web:
        moved = web.get(page)
        assert moved.status_code == 303, moved.text
        assert moved.headers["location"] == f"{page}?map_index=0"
        shown = web.get(f"{page}?map_index=2")
        plain = web.get(f"/backfills/{ended}/tasks/total/{DAY}")
    assert shown.status_code == 200, shown.text
    assert "<h1>double[2] " in shown.text
    assert 'data-map-index="2"' in shown.text
    assert plain.status_code == 200, plain.text
    assert 'data-map-index="-1"' in plain.text
