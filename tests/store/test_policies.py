"""Run options, depends_on_past and limits, pass by pass (SQLite and PostgreSQL).

Like tests/store/test_passes.py, the coordinator publishes to a `Recorder` and the
test plays the workers in-process (`support.passes.drive_by_hand`).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pendulum
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from support.passes import (
    D1,
    Clock,
    Recorder,
    backfill_state,
    claim_and_finish,
    day,
    diamond,
    drive_by_hand,
    new_backfill,
    noop,
    run_rows,
    settings_for,
    spans,
    started_order,
    ti_states,
)

from backfill import DAG
from backfill.engine.coordinator import Coordinator
from backfill.messages import TaskMessage
from backfill.model.states import BackfillState, TIState
from backfill.planning.depends import BEHIND_BLOCKED_PAST, WAITING_FOR_PAST
from backfill.planning.pass_planner import UPSTREAM_CANNOT_RUN
from backfill.store.schema import backfills, pools


def test_continue_on_failures_with_retries_disabled(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    dag = DAG("policies", schedule="@daily", start_date=pendulum.datetime(2024, 1, 1))
    dag.add_task("flaky", noop, retries=3)
    backfill_id = new_backfill(
        engine, dag, 3, max_active_runs=1, on_failure="continue", retries="disabled"
    )
    recorder = Recorder()
    coordinator = Coordinator(engine, settings_for(db_url, tmp_path), dag, publisher=recorder)

    def outcome(m: TaskMessage) -> TIState:  # the first date's try fails, with retries left
        return TIState.UP_FOR_RETRY if m.logical_date == D1.isoformat() else TIState.SUCCESS

    drive_by_hand(engine, coordinator, recorder, backfill_id, Clock(), outcome=outcome)

    assert backfill_state(engine, backfill_id) is BackfillState.FAILED  # exit 1
    states = ti_states(engine)
    assert [states[(day(i), "flaky")] for i in range(3)] == [
        ("failed", 1),  # not retried
        ("success", 1),  # the later runs still ran
        ("success", 1),
    ]
    assert [r.state for r in run_rows(engine)] == ["failed", "success", "success"]


def test_run_backwards_starts_the_newest_run_first(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    dag = DAG("backwards", schedule="@daily", start_date=pendulum.datetime(2024, 1, 1))
    dag.add_task("t", noop)
    backfill_id = new_backfill(engine, dag, 4, max_active_runs=1, order="backward")
    recorder = Recorder()
    coordinator = Coordinator(engine, settings_for(db_url, tmp_path), dag, publisher=recorder)
    drive_by_hand(engine, coordinator, recorder, backfill_id, Clock())
    assert backfill_state(engine, backfill_id) is BackfillState.SUCCESS
    assert started_order(engine) == [day(3), day(2), day(1), day(0)]


def test_task_regex_treats_unselected_tis_of_a_reprocessed_run_as_absent(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    dag = diamond()  # a >> b, c
    recorder = Recorder()
    coordinator = Coordinator(engine, settings_for(db_url, tmp_path), dag, publisher=recorder)
    clock = Clock()
    first = new_backfill(engine, dag, 1)

    def a_fails(m: TaskMessage) -> TIState:
        return TIState.FAILED if m.task_id == "a" else TIState.SUCCESS

    drive_by_hand(engine, coordinator, recorder, first, clock, outcome=a_fails)
    assert ti_states(engine)[(D1, "b")] == ("upstream_failed", 0)

    # Only b runs again: a (failed, not selected) stays in the run but is not its upstream.
    again = new_backfill(engine, dag, 1, reprocess="failed", task_regex="^b$")
    ran: list[str] = []

    def record(m: TaskMessage) -> TIState:
        ran.append(m.task_id)
        return TIState.SUCCESS

    drive_by_hand(engine, coordinator, recorder, again, clock, outcome=record)
    assert ran == ["b"]
    states = ti_states(engine)
    assert [states[(D1, t)][0] for t in "abc"] == ["failed", "success", "success"]
    assert backfill_state(engine, again) is BackfillState.SUCCESS
    assert [r.state for r in run_rows(engine)] == ["success"]  # b and c are its leaves


def test_ignore_dependencies_runs_a_task_whose_upstream_failed(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    dag = diamond()
    backfill_id = new_backfill(engine, dag, 1, dependencies="ignore")
    recorder = Recorder()
    coordinator = Coordinator(engine, settings_for(db_url, tmp_path), dag, publisher=recorder)
    clock = Clock()
    coordinator.run_pass(backfill_id, now=clock.tick())
    coordinator.run_pass(backfill_id, now=clock.tick())
    # a, b and c are queued together: b does not wait for a.
    assert sorted(m.task_id for m, _ in recorder.inbox.queue) == ["a", "b", "c"]

    def outcome(m: TaskMessage) -> TIState:
        return TIState.FAILED if m.task_id == "a" else TIState.SUCCESS

    drive_by_hand(engine, coordinator, recorder, backfill_id, clock, outcome=outcome)
    states = ti_states(engine)
    assert (states[(D1, "a")][0], states[(D1, "b")][0]) == ("failed", "success")
    assert backfill_state(engine, backfill_id) is BackfillState.FAILED


def test_max_active_runs_holds_across_two_backfills_of_a_dag(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    dag = DAG(
        "shared", schedule="@daily", start_date=pendulum.datetime(2024, 1, 1), max_active_runs=2
    )
    dag.add_task("t", noop)
    first = new_backfill(engine, dag, 3)
    second = new_backfill(engine, dag, 3, first=day(10))
    recorder = Recorder()
    coordinator = Coordinator(engine, settings_for(db_url, tmp_path), dag, publisher=recorder)
    clock = Clock()
    peak, ended = 0, set()
    for _ in range(60):
        for backfill_id in (first, second):
            if (
                coordinator.run_pass(backfill_id, now=clock.tick()).state
                is not BackfillState.RUNNING
            ):
                ended.add(backfill_id)
            peak = max(peak, sum(r.state == "running" for r in run_rows(engine)))
        for message, _ in recorder.take():
            claim_and_finish(engine, message, TIState.SUCCESS, now=clock.tick())
        if ended == {first, second}:
            break
    assert {backfill_state(engine, b) for b in (first, second)} == {BackfillState.SUCCESS}
    assert peak == 2  # reached, never exceeded: each backfill alone would start 2


def test_each_limit_holds_back_only_its_tis_and_is_reached(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    with engine.begin() as conn:
        conn.execute(sa.insert(pools).values(name="two", slots=2))
    dag = DAG(
        "limited",
        schedule="@daily",
        start_date=pendulum.datetime(2024, 1, 1),
        max_active_runs=4,
        max_active_tasks=5,
    )
    dag.add_task("pooled", noop, pool="two")
    dag.add_task("solo", noop, max_active_tis_per_dag=1)
    dag.add_task("free", noop)
    backfill_id = new_backfill(engine, dag, 4)
    recorder = Recorder()
    coordinator = Coordinator(engine, settings_for(db_url, tmp_path), dag, publisher=recorder)
    clock = Clock()
    coordinator.run_pass(backfill_id, now=clock.tick())  # starts the 4 runs
    result = coordinator.run_pass(backfill_id, now=clock.tick())

    queued = sorted((m.task_id, m.logical_date) for m, _ in recorder.take())
    # Day 0: all three; day 1: pooled (the pool's 2nd slot) and free, not solo (its cap of
    # 1), and the 5th TI fills max_active_tasks: every limit is reached at once.
    iso = [day(i).isoformat() for i in range(4)]
    assert queued == sorted(
        [
            ("pooled", iso[0]),
            ("solo", iso[0]),
            ("free", iso[0]),
            ("pooled", iso[1]),
            ("free", iso[1]),
        ]
    )
    held = {
        reason: sorted((k.task_id, k.logical_date) for k in keys)
        for reason, keys in result.waiting.items()
    }
    # The first reason that holds a TI is its reason (pools are checked first).
    assert held == {
        "task 'solo' max_active_tis_per_dag (1) reached": [("solo", day(1))],
        "pool 'two' is full (2 slots)": [("pooled", day(2)), ("pooled", day(3))],
        "DAG max_active_tasks (5) reached": sorted(
            [("free", day(2)), ("free", day(3)), ("solo", day(2)), ("solo", day(3))]
        ),
    }
    assert result.deadlock is None


def past_dag(dag_id: str) -> DAG:
    dag = DAG(dag_id, schedule="@daily", start_date=pendulum.datetime(2024, 1, 1))
    dag.add_task("a", noop, depends_on_past=True) >> dag.add_task("b", noop)
    return dag


def test_depends_on_past_waits_for_the_previous_date_even_in_another_backfill(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    dag = past_dag("past_elsewhere")
    earlier = new_backfill(engine, dag, 2)  # the DAG's first two dates
    later = new_backfill(engine, dag, 2, first=day(2))
    recorder = Recorder()
    coordinator = Coordinator(engine, settings_for(db_url, tmp_path), dag, publisher=recorder)
    clock = Clock()
    for _ in range(3):  # the later backfill: runs start, a waits for day 1 (not started)
        result = coordinator.run_pass(later, now=clock.tick())
    assert (result.state, result.deadlock, recorder.take()) == (BackfillState.RUNNING, None, [])
    ((reason, waiting),) = result.waiting.items()
    assert reason == WAITING_FOR_PAST
    assert [(k.task_id, k.logical_date) for k in waiting] == [("a", day(2)), ("a", day(3))]

    drive_by_hand(engine, coordinator, recorder, earlier, clock)
    drive_by_hand(engine, coordinator, recorder, later, clock)
    assert {backfill_state(engine, b) for b in (earlier, later)} == {BackfillState.SUCCESS}
    a_spans = spans(engine, "a")
    assert [d for d, _, _ in a_spans] == [day(i) for i in range(4)]
    for (_, _, end), (_, start, _) in itertools.pairwise(a_spans):
        assert end <= start  # each date began after the previous one ended


def test_a_gap_before_the_range_deadlocks_and_ignore_first_cures_it(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    dag = past_dag("past_gap")
    backfill_id = new_backfill(engine, dag, 2, first=day(2))  # day 1 never ran
    recorder = Recorder()
    coordinator = Coordinator(engine, settings_for(db_url, tmp_path), dag, publisher=recorder)
    clock = Clock()
    drive_by_hand(engine, coordinator, recorder, backfill_id, clock)

    outcome = coordinator.outcome(backfill_id, coordinator.run_pass(backfill_id, now=clock.tick()))
    assert outcome.state is BackfillState.FAILED
    assert [r.state for r in run_rows(engine)] == ["failed", "failed"]
    with engine.connect() as conn:
        ended = conn.execute(sa.select(backfills.c.state).where(backfills.c.id == backfill_id))
        assert ended.scalar_one() == "failed"

    cured = new_backfill(
        engine, dag, 2, first=day(2), reprocess="failed", depends_on_past="ignore_first"
    )
    drive_by_hand(engine, coordinator, recorder, cured, clock)
    assert backfill_state(engine, cured) is BackfillState.SUCCESS
    assert [d for d, _, _ in spans(engine, "a")] == [day(2), day(3)]


def test_the_deadlock_report_names_the_gap_and_the_cure(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    dag = past_dag("past_report")
    backfill_id = new_backfill(engine, dag, 2, first=day(2))
    recorder = Recorder()
    coordinator = Coordinator(engine, settings_for(db_url, tmp_path), dag, publisher=recorder)
    clock = Clock()
    results = [coordinator.run_pass(backfill_id, now=clock.tick()) for _ in range(2)]

    assert results[-1].state is BackfillState.FAILED
    deadlock = results[-1].deadlock
    assert deadlock is not None
    found = {r: [(k.task_id, k.logical_date) for k in keys] for r, keys in deadlock.items()}
    (gap,) = [r for r in found if "has no run" in r]
    assert gap.startswith(
        "depends_on_past: task 'a' has no run at 2024-01-02T00:00:00+00:00 (outside the range?)"
    )
    assert "--ignore-first-depends-on-past" in gap
    assert found == {
        gap: [("a", day(2))],
        BEHIND_BLOCKED_PAST: [("a", day(3))],
        UPSTREAM_CANNOT_RUN: [("b", day(2)), ("b", day(3))],
    }
    assert recorder.batches == []  # nothing was ever dispatched
