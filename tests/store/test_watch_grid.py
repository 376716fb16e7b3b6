"""`store.grid`, the reads of `backfill watch`, on real SQLite and PostgreSQL databases.

A page of dates comes back TI by TI, in date order whatever order the runs were made
in; every other date is counted by state on its side of the page; the frontier is the
first running date, else the first queued, else the first failed.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.engine import Engine
from support.factories import dated_backfill, move_runs, move_tis

from backfill.model.states import BackfillState, RunState, TIState
from backfill.store import grid, reads

T0 = datetime(2024, 1, 1, tzinfo=UTC)
DATES = [T0 + timedelta(days=d) for d in range(10)]
TASKS = ["extract", "clean", "aggregate"]  # creation order, not alphabetical


@pytest.fixture
def backfill_id(engine: Engine) -> int:
    """Ten dates: 0-2 succeeded, 3 running (clean running, aggregate queued, extract
    done), 4 failed on clean (aggregate upstream_failed), 5-9 queued, never started."""
    with engine.begin() as conn:
        made = dated_backfill(conn, "etl", DATES, TASKS)
        move_tis(conn, made, TIState.SUCCESS, DATES[:5], ["extract"])
        move_tis(conn, made, TIState.SUCCESS, DATES[:3], ["clean", "aggregate"])
        move_tis(conn, made, TIState.RUNNING, DATES[3:4], ["clean"])
        move_tis(conn, made, TIState.QUEUED, DATES[3:4], ["aggregate"])
        move_tis(conn, made, TIState.FAILED, DATES[4:5], ["clean"])
        move_tis(conn, made, TIState.UPSTREAM_FAILED, DATES[4:5], ["aggregate"])
        move_runs(conn, made, RunState.SUCCESS, DATES[:3])
        move_runs(conn, made, RunState.RUNNING, DATES[3:4])
        move_runs(conn, made, RunState.FAILED, DATES[4:5])
    return made


def test_task_ids_in_creation_order(engine: Engine, backfill_id: int) -> None:
    with reads.reading(engine) as conn:
        assert grid.task_ids(conn, backfill_id) == tuple(TASKS)
        assert grid.task_ids(conn, backfill_id + 1) == ()


def test_window_reads_its_dates_and_counts_the_others(engine: Engine, backfill_id: int) -> None:
    with reads.reading(engine) as conn:
        page = grid.window(conn, backfill_id, offset=2, limit=4)
    assert page.offset == 2
    assert [row.logical_date for row in page.rows] == DATES[2:6]
    assert [row.run_state for row in page.rows] == [
        RunState.SUCCESS, RunState.RUNNING, RunState.FAILED, RunState.QUEUED,
    ]  # fmt: skip
    s, n = TIState.SUCCESS, TIState.NONE
    assert [row.cells for row in page.rows] == [
        {"extract": s, "clean": s, "aggregate": s},
        {"extract": s, "clean": TIState.RUNNING, "aggregate": TIState.QUEUED},
        {"extract": s, "clean": TIState.FAILED, "aggregate": TIState.UPSTREAM_FAILED},
        {"extract": n, "clean": n, "aggregate": n},
    ]
    assert page.before == {s: 6}  # dates 0 and 1
    assert page.after == {n: 12}  # dates 6 to 9


def test_window_at_either_end_and_past_it(engine: Engine, backfill_id: int) -> None:
    with reads.reading(engine) as conn:
        whole = grid.window(conn, backfill_id, offset=0, limit=100)
        past = grid.window(conn, backfill_id, offset=10, limit=5)
        empty = grid.window(conn, backfill_id + 1, offset=0, limit=5)
    assert len(whole.rows) == 10
    assert (whole.before, whole.after) == ({}, {})
    assert past.rows == ()
    assert sum(past.before.values()) == 30  # every date is before an empty page
    assert past.after == {}
    assert (empty.rows, empty.before, empty.after) == ((), {}, {})


def test_frontier_is_the_first_running_then_queued_then_failed_date(
    engine: Engine, backfill_id: int
) -> None:
    def frontier() -> int:
        with reads.reading(engine) as conn:
            return grid.frontier(conn, backfill_id)

    assert frontier() == 3  # date 3 runs, though 4 failed and 5-9 wait
    with engine.begin() as conn:
        move_tis(conn, backfill_id, TIState.SUCCESS, DATES[3:4])
        move_runs(conn, backfill_id, RunState.SUCCESS, DATES[3:4])
    assert frontier() == 5  # nothing runs: the first date not started
    with engine.begin() as conn:
        move_runs(conn, backfill_id, RunState.FAILED, DATES[5:])  # as a cancel leaves them
    assert frontier() == 4  # the first failure
    with engine.begin() as conn:
        finished = dated_backfill(conn, "done", DATES[:2], TASKS, state=BackfillState.SUCCESS)
        move_runs(conn, finished, RunState.SUCCESS, DATES[:2])
    with reads.reading(engine) as conn:
        assert grid.frontier(conn, finished) == 0
        assert grid.frontier(conn, finished + 1) == 0  # no such backfill: no runs


def test_window_is_bounded_by_its_page(engine: Engine) -> None:
    """A page of 3 dates of a 400-date backfill reads 3 runs' TIs; the rest is counted."""
    dates = [T0 + timedelta(hours=h) for h in range(400)]
    with engine.begin() as conn:
        made = dated_backfill(conn, "hourly", dates, TASKS)
        move_tis(conn, made, TIState.SUCCESS, dates[:200])
    with reads.reading(engine) as conn:
        page = grid.window(conn, made, offset=199, limit=3)
    assert [row.logical_date for row in page.rows] == dates[199:202]
    assert [set(row.cells.values()) for row in page.rows] == [
        {TIState.SUCCESS}, {TIState.NONE}, {TIState.NONE},
    ]  # fmt: skip
    assert page.before == {TIState.SUCCESS: 199 * 3}
    assert page.after == {TIState.NONE: 198 * 3}
