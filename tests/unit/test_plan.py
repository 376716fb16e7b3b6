"""The dry-run plan (pure), the range it expands, and the store read it is built from."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pendulum
import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine
from support.factories import existing_run

from backfill import DAG, Context
from backfill.model.errors import BadRange
from backfill.model.states import FAILED_STATES, RunState, TIState
from backfill.planning.backfill_plan import (
    Action,
    expand_range,
    plan_backfill,
    refuse_missing_pools,
)
from backfill.planning.errors import (
    BackwardsWithDependsOnPast,
    NoTaskSelected,
    UnknownPool,
)
from backfill.planning.run_options import Order, ReprocessPolicy, RunOptions
from backfill.planning.snapshot import ExistingRun
from backfill.store.reads import existing_runs, reading

NONE, FAILED, COMPLETED = ReprocessPolicy.NONE, ReprocessPolicy.FAILED, ReprocessPolicy.COMPLETED
T0 = pendulum.datetime(2024, 1, 1, tz="UTC")


def noop(ctx: Context) -> None:
    pass


def make_dag(schedule: str | timedelta = "@daily") -> DAG:
    """c is declared first but runs last: order must be topological, not declaration order."""
    dag = DAG("p", schedule=schedule, start_date=T0)
    c = dag.add_task("c", noop)
    a = dag.add_task("a", noop)
    b = dag.add_task("b", noop)
    a >> b >> c
    return dag


DAG_P = make_dag()
ORDER = ("a", "b", "c")
DAY1, DAY2, DAY3 = DAG_P.schedule.intervals(T0, T0.add(days=2))


def existing(state: RunState, **tis: TIState) -> ExistingRun:
    return ExistingRun(run_id=f"r_{state}", state=state, ti_states=tis)


def plan_one(run: ExistingRun | None, policy: ReprocessPolicy) -> Any:
    found = {} if run is None else {DAY1.logical_date: run}
    plan = plan_backfill(DAG_P, [DAY1], found, RunOptions(reprocess=policy))
    return plan.runs[0]


# Airflow 3's table (AIRFLOW_SEMANTICS.md section 9), row by row.
TABLE = [
    (None, NONE, "run", "no run exists"),
    (None, FAILED, "run", "no run exists"),
    (None, COMPLETED, "run", "no run exists"),
    (RunState.QUEUED, NONE, "skip", "in flight: run is queued"),
    (RunState.QUEUED, FAILED, "skip", "in flight: run is queued"),
    (RunState.QUEUED, COMPLETED, "skip", "in flight: run is queued"),
    (RunState.RUNNING, NONE, "skip", "in flight: run is running"),
    (RunState.RUNNING, FAILED, "skip", "in flight: run is running"),
    (RunState.RUNNING, COMPLETED, "skip", "in flight: run is running"),
    (RunState.FAILED, NONE, "skip", "already exists: run is failed"),
    (RunState.FAILED, FAILED, "reprocess", "run is failed; --reprocess failed"),
    (RunState.FAILED, COMPLETED, "reprocess", "run is failed; --reprocess completed"),
    (RunState.SUCCESS, NONE, "skip", "already exists: run is success"),
    (RunState.SUCCESS, FAILED, "skip", "already exists: run is success"),
    (RunState.SUCCESS, COMPLETED, "reprocess", "run is success; --reprocess completed"),
]


@pytest.mark.parametrize(("state", "policy", "action", "reason"), TABLE)
def test_airflow3_reprocess_table(
    state: RunState | None, policy: ReprocessPolicy, action: str, reason: str
) -> None:
    run = None if state is None else existing(state, a=TIState.SUCCESS, b=TIState.FAILED)
    planned = plan_one(run, policy)
    assert (planned.action.value, planned.reason) == (action, reason)
    assert planned.run_id == (None if run is None else run.run_id)


def test_table_covers_every_state_and_policy() -> None:
    assert {(s, p) for s, p, _, _ in TABLE} == {
        (s, p) for s in [None, *RunState] for p in ReprocessPolicy
    }


def test_new_run_runs_every_task_in_topological_order() -> None:
    assert plan_one(None, NONE).task_ids == ORDER


def test_reprocess_failed_runs_what_did_not_succeed() -> None:
    # a succeeded, b was skipped, c failed: only c runs again.
    run = existing(RunState.FAILED, a=TIState.SUCCESS, b=TIState.SKIPPED, c=TIState.FAILED)
    assert plan_one(run, FAILED).task_ids == ("c",)
    run = existing(RunState.FAILED, a=TIState.FAILED, b=TIState.UPSTREAM_FAILED, c=TIState.NONE)
    assert plan_one(run, FAILED).task_ids == ORDER


def test_reprocess_failed_runs_tasks_added_since_and_ignores_removed_ones() -> None:
    run = existing(RunState.FAILED, a=TIState.SUCCESS, gone=TIState.FAILED)
    assert plan_one(run, FAILED).task_ids == ("b", "c")


def test_reprocess_completed_runs_everything() -> None:
    run = existing(RunState.SUCCESS, a=TIState.SUCCESS, b=TIState.SUCCESS, c=TIState.SKIPPED)
    assert plan_one(run, COMPLETED).task_ids == ORDER
    run = existing(RunState.FAILED, a=TIState.SUCCESS, b=TIState.FAILED)
    assert plan_one(run, COMPLETED).task_ids == ORDER


def test_skip_runs_nothing() -> None:
    assert plan_one(existing(RunState.RUNNING, a=TIState.FAILED), COMPLETED).task_ids == ()


def test_a_plan_keeps_date_order_and_totals() -> None:
    found = {
        DAY2.logical_date: existing(RunState.FAILED, a=TIState.SUCCESS, b=TIState.FAILED),
        DAY3.logical_date: existing(RunState.RUNNING),
    }
    plan = plan_backfill(DAG_P, [DAY1, DAY2, DAY3], found, RunOptions(reprocess=FAILED))
    assert plan.dag_id == "p"
    assert [r.logical_date for r in plan.runs] == [
        DAY1.logical_date,
        DAY2.logical_date,
        DAY3.logical_date,
    ]
    assert [r.action for r in plan.runs] == [Action.RUN, Action.REPROCESS, Action.SKIP]
    assert plan.totals() == {
        "run": 1,
        "skip": 1,
        "reprocess": 1,
        "runs": 3,
        "task_instances": 3 + 2,
    }


def test_existing_runs_match_whatever_datetime_class_keys_them() -> None:
    # The store hands back plain datetimes; the intervals carry pendulum ones.
    plain = datetime(2024, 1, 1, tzinfo=UTC)
    plan = plan_backfill(DAG_P, [DAY1], {plain: existing(RunState.SUCCESS)}, RunOptions())
    assert plan.runs[0].action is Action.SKIP


# --- options that shape the plan ---------------------------------------------------


def plan_with(run: ExistingRun | None, **options: Any) -> Any:
    found = {} if run is None else {DAY1.logical_date: run}
    return plan_backfill(DAG_P, [DAY1], found, RunOptions(**options)).runs[0]


def test_task_regex_selects_the_tis_of_new_and_reprocessed_runs() -> None:
    assert plan_with(None, task_regex="^[bc]$").task_ids == ("b", "c")  # a is not required
    run = existing(RunState.FAILED, a=TIState.FAILED, b=TIState.UPSTREAM_FAILED, c=TIState.NONE)
    assert plan_with(run, reprocess=FAILED, task_regex="a|c").task_ids == ("a", "c")
    assert plan_with(run, reprocess=COMPLETED, task_regex="b").task_ids == ("b",)
    plan = plan_backfill(DAG_P, [DAY1, DAY2], {}, RunOptions(task_regex="c"))
    assert plan.task_ids == ("c",)
    assert plan.totals()["task_instances"] == 2


def test_a_task_regex_matching_nothing_names_the_regex_and_the_tasks() -> None:
    with pytest.raises(NoTaskSelected) as info:
        plan_with(None, task_regex="^z")
    assert str(info.value) == (
        "--task-regex '^z' matches no task of DAG 'p'; its tasks are: a, b, c"
    )


def test_rerun_failed_tasks_takes_over_finished_runs_with_failed_tis() -> None:
    run = existing(RunState.FAILED, a=TIState.SUCCESS, b=TIState.FAILED, c=TIState.UPSTREAM_FAILED)
    planned = plan_with(run, rerun_failed_tasks=True)
    assert (planned.action, planned.reason) == (
        Action.REPROCESS,
        "--rerun-failed-tasks: 2 failed TIs",
    )
    assert (planned.task_ids, planned.only_failed, planned.run_id) == (("b", "c"), True, run.run_id)
    # A successful run can hold a failed TI (a downstream all_done leaf succeeded).
    ok = existing(RunState.SUCCESS, a=TIState.FAILED, b=TIState.SKIPPED, c=TIState.SUCCESS)
    planned = plan_with(ok, rerun_failed_tasks=True)
    assert (planned.reason, planned.task_ids) == ("--rerun-failed-tasks: 1 failed TI", ("a",))


def test_rerun_failed_tasks_never_reruns_success_nor_touches_runs_in_flight() -> None:
    clean = existing(RunState.SUCCESS, a=TIState.SUCCESS, b=TIState.SKIPPED, c=TIState.SUCCESS)
    assert plan_with(clean, rerun_failed_tasks=True).action is Action.SKIP
    running = existing(RunState.RUNNING, a=TIState.FAILED)
    skipped = plan_with(running, rerun_failed_tasks=True)
    assert (skipped.action, skipped.reason) == (Action.SKIP, "in flight: run is running")
    # Only selected tasks are rerun; none selected failed: nothing to take over.
    run = existing(RunState.FAILED, a=TIState.FAILED, b=TIState.SUCCESS, c=TIState.SUCCESS)
    assert plan_with(run, rerun_failed_tasks=True, task_regex="c").action is Action.SKIP
    # Where the reprocess table already reprocesses, the policy decides what runs.
    planned = plan_with(run, rerun_failed_tasks=True, reprocess=COMPLETED)
    assert (planned.task_ids, planned.only_failed) == (ORDER, False)


def test_run_backwards_starts_the_newest_date_first() -> None:
    plan = plan_backfill(DAG_P, [DAY1, DAY2, DAY3], {}, RunOptions(order=Order.BACKWARD))
    assert [r.logical_date for r in plan.runs] == [d.logical_date for d in (DAY3, DAY2, DAY1)]


def test_run_backwards_is_refused_when_a_selected_task_depends_on_its_past() -> None:
    dag = DAG("past", schedule="@daily", start_date=T0)
    a = dag.add_task("a", noop)
    b = dag.add_task("b", noop, depends_on_past=True)
    c = dag.add_task("c", noop, depends_on_past=True)
    a >> [b, c]
    backwards = RunOptions(order=Order.BACKWARD)
    with pytest.raises(BackwardsWithDependsOnPast) as info:
        plan_backfill(dag, [DAY1], {}, backwards)
    assert str(info.value) == (
        "You cannot backfill backwards because one or more tasks depend_on_past: b, c"
    )
    assert plan_backfill(dag, [DAY1], {}, RunOptions(order=Order.BACKWARD, task_regex="a"))
    assert plan_backfill(dag, [DAY1], {}, RunOptions())  # forwards: fine


def test_the_pools_a_plan_needs_and_the_refusal_of_missing_ones() -> None:
    dag = DAG("pooled", schedule="@daily", start_date=T0)
    dag.add_task("a", noop)
    dag.add_task("b", noop, pool="db")
    dag.add_task("c", noop, pool="db")
    plan = plan_backfill(dag, [DAY1], {}, RunOptions())
    assert plan.pools == {"db": ("b", "c"), "default_pool": ("a",)}
    override = plan_backfill(dag, [DAY1], {}, RunOptions(pool="big", task_regex="a|b"))
    assert override.pools == {"big": ("--pool",)}  # the override replaces declared pools
    refuse_missing_pools(plan, [])
    with pytest.raises(UnknownPool) as info:
        refuse_missing_pools(plan, ["db", "default_pool"])
    assert str(info.value) == (
        "pool 'db' (needed by b, c); pool 'default_pool' (needed by a) do not exist; "
        "create them first: backfill pools set db SLOTS; backfill pools set default_pool SLOTS"
    )


def test_a_missing_pool_needed_by_many_tasks_names_a_few() -> None:
    dag = DAG("wide", schedule="@daily", start_date=T0)
    for i in range(8):
        dag.add_task(f"t{i}", noop, pool="db")
    plan = plan_backfill(dag, [DAY1], {}, RunOptions())
    with pytest.raises(UnknownPool, match=r"needed by t0, t1, t2, t3, t4 and 3 more\)"):
        refuse_missing_pools(plan, ["db"])


run_states = st.one_of(st.none(), st.sampled_from(RunState))
ti_maps = st.dictionaries(st.sampled_from(["a", "b", "c", "gone"]), st.sampled_from(TIState))


@given(state=run_states, tis=ti_maps, policy=st.sampled_from(ReprocessPolicy))
def test_plan_invariants(
    state: RunState | None, tis: dict[str, TIState], policy: ReprocessPolicy
) -> None:
    run = None if state is None else ExistingRun("r", state, tis)
    planned = plan_one(run, policy)
    expected = {row[:2]: row[2] for row in TABLE}[(state, policy)]
    assert planned.action.value == expected
    # Task ids: a subsequence of the topological order, empty for a skip.
    assert list(planned.task_ids) == [t for t in ORDER if t in planned.task_ids]
    if planned.action is Action.SKIP:
        assert planned.task_ids == ()
    if planned.action is Action.RUN or (policy is COMPLETED and planned.action is Action.REPROCESS):
        assert planned.task_ids == ORDER
    if planned.action is Action.REPROCESS and policy is FAILED:
        succeeded = {TIState.SUCCESS, TIState.SKIPPED}
        assert {t for t in ORDER if tis.get(t) not in succeeded} == set(planned.task_ids)


@given(
    state=run_states,
    tis=ti_maps,
    policy=st.sampled_from(ReprocessPolicy),
    regex=st.sampled_from([None, "a", "b|c", "^c$"]),
)
def test_rerun_failed_tasks_invariants(
    state: RunState | None, tis: dict[str, TIState], policy: ReprocessPolicy, regex: str | None
) -> None:
    run = None if state is None else ExistingRun("r", state, tis)
    without = plan_with(run, reprocess=policy, task_regex=regex)
    planned = plan_with(run, reprocess=policy, task_regex=regex, rerun_failed_tasks=True)
    selected = {t for t in ORDER if regex is None or re.search(regex, t)}
    assert set(planned.task_ids) <= selected
    if without.action is not Action.SKIP:  # the reprocess table decides; the flag adds nothing
        assert planned == without
        return
    failed = [t for t in ORDER if t in selected and tis.get(t) in FAILED_STATES]
    if state in (RunState.SUCCESS, RunState.FAILED) and failed:
        assert (planned.action, planned.only_failed) == (Action.REPROCESS, True)
        assert list(planned.task_ids) == failed  # never a TI that succeeded or did not run
    else:
        assert planned == without


# --- expand_range ---------------------------------------------------------------


def test_expand_range_is_the_schedule_inclusive() -> None:
    got = expand_range(DAG_P, T0, T0.add(days=2))
    assert [i.logical_date for i in got] == [T0, T0.add(days=1), T0.add(days=2)]


def test_start_after_end_is_refused() -> None:
    with pytest.raises(
        BadRange, match=r"--start-date 2024-01-02T00:00:00\+00:00 is after --end-date"
    ):
        expand_range(DAG_P, T0.add(days=1), T0)


def test_an_empty_range_is_refused() -> None:
    with pytest.raises(BadRange, match=r"no logical date of DAG 'p' \(schedule @daily\) falls in"):
        expand_range(DAG_P, T0.add(hours=1), T0.add(hours=23))


def test_the_cap_counts_runs_exactly() -> None:
    assert len(expand_range(DAG_P, T0, T0.add(days=9), max_runs=10)) == 10
    with pytest.raises(BadRange, match=r"holds more than 10 runs of DAG 'p'.*split it"):
        expand_range(DAG_P, T0, T0.add(days=10), max_runs=10)


def test_an_absurd_range_is_refused_quickly() -> None:
    # Two centuries of minutes: refused from a probe, never expanded (the test timeout guards).
    dag = make_dag("* * * * *")
    with pytest.raises(BadRange, match="holds more than 1000000 runs"):
        expand_range(dag, T0, T0.add(years=200))


@settings(max_examples=60, deadline=None)
@given(
    hours=st.integers(1, 72),
    start_offset=st.integers(0, 24 * 60),
    span=st.integers(0, 24 * 90),
    cap=st.integers(1, 400),
)
def test_expand_range_agrees_with_the_schedule(
    hours: int, start_offset: int, span: int, cap: int
) -> None:
    dag = make_dag(timedelta(hours=hours)) if hours % 2 else make_dag(f"0 */{min(hours, 23)} * * *")
    start = T0.add(minutes=start_offset)
    end = start.add(hours=span)
    expected = dag.schedule.intervals(start, end)
    if not expected or len(expected) > cap:
        with pytest.raises(BadRange):
            expand_range(dag, start, end, max_runs=cap)
    else:
        assert expand_range(dag, start, end, max_runs=cap) == expected


# --- the store read behind the plan (both backends) ---------------------------------


def test_existing_runs_reads_runs_and_tis_in_one_statement(engine: Engine) -> None:
    d1, d2, d3 = (DAY1.logical_date, DAY2.logical_date, DAY3.logical_date)
    with engine.begin() as conn:
        existing_run(conn, "p", d1, RunState.SUCCESS, a=TIState.SUCCESS, b=TIState.SKIPPED)
        existing_run(conn, "p", d3, RunState.QUEUED)  # no TIs yet
        existing_run(conn, "p", d1 + timedelta(hours=13), RunState.FAILED, a=TIState.FAILED)
        existing_run(conn, "other", d2, RunState.FAILED, a=TIState.FAILED)
    statements: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    with reading(engine) as conn:
        found = existing_runs(conn, "p", [d1, d2, d3])
    assert [s for s in statements if "dag_runs" in s] == [statements[-1]]
    assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 1
    assert set(found) == {d1, d3}  # not the 13:00 run between the dates, nor another DAG's
    assert found[d1] == ExistingRun(
        f"p__{d1.isoformat()}", RunState.SUCCESS, {"a": TIState.SUCCESS, "b": TIState.SKIPPED}
    )
    assert found[d3].state is RunState.QUEUED
    assert found[d3].ti_states == {}
    # Keys are the caller's own objects.
    assert all(any(k is d for d in (d1, d3)) for k in found)


def test_existing_runs_of_no_dates_reads_nothing(engine: Engine) -> None:
    with reading(engine) as conn:
        assert existing_runs(conn, "p", []) == {}


def test_existing_runs_refuses_naive_dates(engine: Engine) -> None:
    with reading(engine) as conn, pytest.raises(ValueError, match="naive"):
        existing_runs(conn, "p", [datetime(2024, 1, 1)])
