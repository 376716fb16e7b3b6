"""depends_on_past (pure): the verdict on a TI's past, previous dates, the past a pass needs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pendulum
import pytest

from backfill.model.dag import DAG
from backfill.model.states import RunState, TIState
from backfill.planning.depends import (
    IGNORE_FIRST_FLAG,
    WAITING_FOR_PAST,
    Past,
    judge,
    previous_date,
    wanted_past,
)
from backfill.planning.limits import UNLIMITED
from backfill.planning.snapshot import LimitCounts, PastTI, RunRow, Snapshot, TIRow

_S, _R = TIState, RunState
START = pendulum.datetime(2024, 1, 1, tz="UTC")
PREV = datetime(2024, 1, 4, tzinfo=UTC)


def noop(ctx: object) -> None:
    """A task callable; never run here."""


def make_dag(schedule: Any = "@daily", start: datetime = START, **tasks: bool) -> DAG:
    """`tasks`: task_id -> depends_on_past."""
    dag = DAG("dp", schedule=schedule, start_date=start)
    for task_id, past in tasks.items():
        dag.add_task(task_id, noop, depends_on_past=past)
    return dag


@pytest.mark.parametrize("state", [_S.SUCCESS, _S.SKIPPED])
@pytest.mark.parametrize("run_state", list(RunState))
def test_a_past_that_succeeded_or_skipped_lets_the_ti_run(
    state: TIState, run_state: RunState
) -> None:
    verdict = judge("t", PREV, PastTI(state, run_state), make_dag(t=True))
    assert verdict.past is Past.OK


def test_a_gap_blocks_and_points_to_ignore_first_depends_on_past() -> None:
    dag = make_dag(t=True)
    for found in [None, PastTI(_S.REMOVED, _R.SUCCESS)]:
        verdict = judge("t", PREV, found, dag)
        assert verdict.past is Past.BLOCKED
        assert verdict.reason.startswith("depends_on_past: task 't' has no run at ")
        assert "2024-01-04T00:00:00+00:00 (outside the range?)" in verdict.reason
        assert IGNORE_FIRST_FLAG in verdict.reason


@pytest.mark.parametrize("state", [_S.FAILED, _S.UPSTREAM_FAILED])
def test_a_failed_past_blocks_naming_its_state(state: TIState) -> None:
    verdict = judge("t", PREV, PastTI(state, _R.FAILED), make_dag(t=True))
    assert verdict.past is Past.BLOCKED
    assert verdict.reason.startswith(f"depends_on_past: task 't' ended {state} at 2024-01-04")
    assert "--reprocess failed" in verdict.reason
    assert IGNORE_FIRST_FLAG not in verdict.reason


@pytest.mark.parametrize(
    "state",
    [_S.NONE, _S.SCHEDULED, _S.QUEUED, _S.RUNNING, _S.UP_FOR_RETRY, _S.UP_FOR_RESCHEDULE],
)
@pytest.mark.parametrize("run_state", [_R.QUEUED, _R.RUNNING])
def test_a_past_still_on_its_way_is_waited_for(state: TIState, run_state: RunState) -> None:
    verdict = judge("t", PREV, PastTI(state, run_state), make_dag(t=True))
    assert (verdict.past, verdict.reason) == (Past.WAIT, WAITING_FOR_PAST)


@pytest.mark.parametrize(
    ("state", "past"),
    [
        (_S.NONE, Past.BLOCKED),  # nobody will run it: its run has ended
        (_S.SCHEDULED, Past.BLOCKED),
        (_S.UP_FOR_RETRY, Past.BLOCKED),
        (_S.UP_FOR_RESCHEDULE, Past.BLOCKED),
        (_S.QUEUED, Past.WAIT),  # a worker may still claim and finish it
        (_S.RUNNING, Past.WAIT),
    ],
)
def test_a_past_left_unfinished_in_an_ended_run(state: TIState, past: Past) -> None:
    verdict = judge("t", PREV, PastTI(state, _R.FAILED), make_dag(t=True))
    assert verdict.past is past
    if past is Past.BLOCKED:
        assert verdict.reason.startswith("depends_on_past: task 't' never ended at 2024-01-04")
        assert f"it is {state} in a run that ended failed" in verdict.reason


def test_dates_are_shown_in_the_dags_timezone() -> None:
    tz = "America/New_York"
    dag = make_dag(start=pendulum.datetime(2024, 1, 1, tz=tz), t=True)
    verdict = judge("t", pendulum.datetime(2024, 3, 10, tz=tz), None, dag)
    assert "at 2024-03-10T00:00:00-05:00 " in verdict.reason


# -- previous dates ----------------------------------------------------------------


def test_the_dags_first_date_has_no_past() -> None:
    dag = make_dag(t=True)
    assert previous_date(dag, START) is None
    assert previous_date(dag, START.add(days=1)) == START
    assert previous_date(dag, START.add(days=40)) == START.add(days=39)


def test_a_start_date_off_the_schedule_starts_at_the_next_tick() -> None:
    dag = make_dag(start=pendulum.datetime(2024, 1, 1, 6, tz="UTC"), t=True)
    assert previous_date(dag, pendulum.datetime(2024, 1, 2, tz="UTC")) is None
    assert previous_date(dag, pendulum.datetime(2024, 1, 3, tz="UTC")) == pendulum.datetime(
        2024, 1, 2, tz="UTC"
    )


def test_previous_dates_follow_the_local_clock_across_dst() -> None:
    tz = "Europe/London"
    dag = make_dag(start=pendulum.datetime(2024, 1, 1, tz=tz), t=True)
    after_change = pendulum.datetime(2024, 4, 1, tz=tz)  # BST: 2024-03-31T23:00Z
    before = previous_date(dag, after_change)
    assert before == pendulum.datetime(2024, 3, 31, tz=tz)  # GMT midnight, 23 hours earlier
    assert before is not None
    assert after_change - before == timedelta(hours=23)


def test_a_timedelta_schedule_looks_back_one_delta() -> None:
    dag = make_dag(schedule=timedelta(hours=6), t=True)
    assert previous_date(dag, START.add(hours=9)) == START.add(hours=3)
    assert previous_date(dag, START.add(hours=5)) is None  # before the DAG's start


# -- the past a pass reads ------------------------------------------------------------


def snapshot_of(dag: DAG, days: list[int], states: dict[tuple[int, str], TIState]) -> Snapshot:
    runs = [
        RunRow(id=d, run_id=f"r{d}", logical_date=START.add(days=d), state=_R.RUNNING) for d in days
    ]
    tis = [
        TIRow(
            id=100 * d + i,
            dag_run_id=d,
            task_id=tid,
            state=states.get((d, tid), _S.NONE),
            try_number=0,
            max_tries=0,
            pool="default_pool",
            pool_slots=1,
            priority_weight=1,
        )
        for d in days
        for i, tid in enumerate(dag.tasks)
    ]
    counts = LimitCounts(
        pool_slots={}, pool_sizes={"default_pool": UNLIMITED}, dag_active=0, task_active={}
    )
    return Snapshot(runs=tuple(runs), tis=tuple(tis), queued_runs=0, limits=counts)


def test_wanted_past_is_the_previous_dates_not_running_here_of_pending_dop_tis() -> None:
    dag = make_dag(p=True, q=True, free=False)
    # Days 0, 3, 4 run: day 0 is the DAG's first (no past), day 4's past is day 3 (here).
    snap = snapshot_of(dag, [0, 3, 4], {(3, "q"): _S.RUNNING})
    task_ids, dates = wanted_past(dag, snap, lambda tid: True)
    assert (task_ids, dates) == ({"p"}, {START.add(days=2)})  # q of day 3 is no longer pending
    task_ids, dates = wanted_past(dag, snap, lambda tid: tid != "p")
    assert (task_ids, dates) == (set(), set())
