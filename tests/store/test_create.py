"""`create_backfill`: one transaction writes the backfill, its new runs and TIs,
and takes over the runs it reprocesses. Every test runs on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pendulum
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from support.states import force_state

from backfill import DAG, Context
from backfill.engine.create import create_backfill
from backfill.engine.errors import RunChangedMeanwhile
from backfill.model.states import BackfillState, RunState, TIState
from backfill.planning.backfill_plan import Action, BackfillPlan, expand_range, plan_backfill
from backfill.planning.run_options import ReprocessPolicy, RunOptions
from backfill.store import reads
from backfill.store.schema import backfills, dag_runs, task_instances, ti_transitions

NOW = pendulum.datetime(2024, 6, 1, 12, tz="UTC")
D1 = datetime(2024, 1, 1, tzinfo=UTC)


def noop(ctx: Context) -> None:
    pass


def make_dag(*, extra: str | None = None, without: str | None = None) -> DAG:
    """a >> b, plus c; b has 2 retries and its own pool and queue."""
    dag = DAG("create_test", schedule="@daily", start_date=pendulum.datetime(2024, 1, 1))
    tasks = {
        "a": dag.add_task("a", noop) if without != "a" else None,
        "b": dag.add_task("b", noop, retries=2, pool="db", queue="q_b", priority_weight=5),
        "c": dag.add_task("c", noop),
    }
    if tasks["a"] is not None:
        tasks["a"] >> tasks["b"]
    if extra:
        dag.add_task(extra, noop)
    return dag


def make_plan(engine: Engine, dag: DAG, days: int = 3, **options: Any) -> BackfillPlan:
    intervals = expand_range(
        dag, pendulum.instance(D1), pendulum.instance(D1) + timedelta(days - 1)
    )
    with reads.reading(engine) as conn:
        existing = reads.existing_runs(conn, dag.dag_id, [i.logical_date for i in intervals])
    return plan_backfill(dag, intervals, existing, RunOptions(**options))


def rows(engine: Engine, table: sa.Table, *where: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(table).where(*where).order_by(table.c.id)))


def tis_of(engine: Engine, run_pk: int) -> dict[str, Any]:
    return {
        r.task_id: r for r in rows(engine, task_instances, task_instances.c.dag_run_id == run_pk)
    }


def test_create_writes_backfill_runs_and_tis(engine: Engine) -> None:
    dag = make_dag()
    plan = make_plan(engine, dag, conf={"k": 1}, max_active_runs=2)
    backfill_id = create_backfill(engine, dag, plan, now=NOW)

    (bf,) = rows(engine, backfills)
    assert (bf.id, bf.state, bf.dag_id) == (backfill_id, BackfillState.RUNNING, "create_test")
    assert (bf.start, bf.end) == (D1, D1 + timedelta(days=2))
    assert bf.dag_fingerprint == dag.fingerprint
    assert bf.options == plan.options.as_json()
    assert bf.conf == {"k": 1}

    runs = rows(engine, dag_runs)
    assert [r.logical_date for r in runs] == [D1 + timedelta(days=i) for i in range(3)]
    for run in runs:
        assert run.run_id == f"backfill__{run.logical_date.isoformat()}"
        assert (run.state, run.backfill_id, run.conf) == (RunState.QUEUED, backfill_id, {"k": 1})
        assert (run.data_interval_start, run.data_interval_end) == (
            run.logical_date,
            run.logical_date + timedelta(days=1),
        )
        tis = tis_of(engine, run.id)
        assert sorted(tis) == ["a", "b", "c"]
        assert {t.state for t in tis.values()} == {TIState.NONE}
        assert {t.try_number for t in tis.values()} == {0}
        b = tis["b"]
        assert (b.max_tries, b.pool, b.queue, b.priority_weight) == (2, "db", "q_b", 5)
        assert (tis["a"].max_tries, tis["a"].pool, tis["a"].queue) == (0, "default_pool", "default")


def test_a_plan_that_skips_everything_is_a_finished_backfill(engine: Engine) -> None:
    dag = make_dag()
    create_backfill(engine, dag, make_plan(engine, dag), now=NOW)
    with engine.begin() as conn:
        force_state(conn, dag_runs, sa.true(), RunState.SUCCESS)
    plan = make_plan(engine, dag)
    assert {r.action for r in plan.runs} == {Action.SKIP}

    backfill_id = create_backfill(engine, dag, plan, now=NOW)

    bf = rows(engine, backfills, backfills.c.id == backfill_id)[0]
    assert bf.state == BackfillState.SUCCESS
    assert len(rows(engine, dag_runs)) == 3  # nothing new, nothing adopted
    assert {r.backfill_id for r in rows(engine, dag_runs)} == {1}


def finish_first_run(engine: Engine, states: dict[str, TIState], run_state: RunState) -> int:
    """Give the run at D1 an outcome, as if a backfill had run it (try 1 of each TI)."""
    with engine.begin() as conn:
        run_pk = conn.execute(
            sa.select(dag_runs.c.id).where(dag_runs.c.logical_date == D1)
        ).scalar_one()
        force_state(conn, dag_runs, sa.true(), RunState.SUCCESS)
        force_state(conn, dag_runs, dag_runs.c.id == run_pk, run_state)
        for task_id, state in states.items():
            where = sa.and_(
                task_instances.c.dag_run_id == run_pk, task_instances.c.task_id == task_id
            )
            values = {"try_number": 1, "last_error": "old", "updated_by": "worker:x"}
            force_state(conn, task_instances, where, state, **values)
    return int(run_pk)


def test_reprocess_failed_adopts_the_run_and_clears_only_what_did_not_succeed(
    engine: Engine,
) -> None:
    old_dag = make_dag(extra="gone")
    first = create_backfill(engine, old_dag, make_plan(engine, old_dag), now=NOW)
    run_pk = finish_first_run(
        engine,
        {"a": TIState.SUCCESS, "b": TIState.FAILED, "c": TIState.SUCCESS, "gone": TIState.SUCCESS},
        RunState.FAILED,
    )
    # The DAG changed since: task `gone` was removed, task `new` added.
    dag = make_dag(extra="new")
    plan = make_plan(engine, dag, reprocess=ReprocessPolicy.FAILED, conf={"again": True})
    assert [r.action for r in plan.runs] == [Action.REPROCESS, Action.SKIP, Action.SKIP]
    assert plan.runs[0].task_ids == ("b", "new")

    second = create_backfill(engine, dag, plan, now=NOW)

    run = rows(engine, dag_runs, dag_runs.c.id == run_pk)[0]
    assert (run.backfill_id, run.state, run.conf) == (second, RunState.QUEUED, {"again": True})
    assert (run.start_date, run.end_date) == (None, None)
    other_runs = rows(engine, dag_runs, dag_runs.c.id != run_pk)
    assert {(r.backfill_id, r.state) for r in other_runs} == {(first, RunState.SUCCESS)}
    tis = tis_of(engine, run_pk)
    assert (tis["a"].state, tis["a"].try_number, tis["a"].last_error) == ("success", 1, "old")
    assert (tis["c"].state, tis["c"].try_number) == ("success", 1)
    # Airflow's clear: the try number keeps counting, max_tries = tries so far + retries.
    assert (tis["b"].state, tis["b"].try_number, tis["b"].max_tries) == ("none", 1, 1 + 2)
    assert tis["b"].last_error is None
    assert (tis["new"].state, tis["new"].try_number, tis["new"].max_tries) == ("none", 0, 0)
    assert tis["gone"].state == TIState.REMOVED
    journal = {
        (r.task_instance_id, r.from_state, r.to_state, r.actor)
        for r in rows(engine, ti_transitions)
    }
    assert (tis["b"].id, "failed", "none", "coordinator:create") in journal
    assert (tis["gone"].id, "none", "removed", "coordinator:create") in journal
    cleared = {r[0] for r in journal if r[3] == "coordinator:create"}
    assert cleared == {tis["b"].id, tis["gone"].id}  # a and c kept their outcome


def test_reprocess_completed_clears_every_task(engine: Engine) -> None:
    dag = make_dag()
    create_backfill(engine, dag, make_plan(engine, dag), now=NOW)
    run_pk = finish_first_run(
        engine, dict.fromkeys(("a", "b", "c"), TIState.SUCCESS), RunState.SUCCESS
    )
    plan = make_plan(engine, dag, days=1, reprocess=ReprocessPolicy.COMPLETED)

    create_backfill(engine, dag, plan, now=NOW)

    tis = tis_of(engine, run_pk)
    assert {t: (r.state, r.try_number, r.max_tries) for t, r in tis.items()} == {
        "a": ("none", 1, 1),
        "b": ("none", 1, 3),
        "c": ("none", 1, 1),
    }


def test_a_run_created_meanwhile_is_a_conflict_and_nothing_is_written(engine: Engine) -> None:
    dag = make_dag()
    stale = make_plan(engine, dag)  # planned before anyone created a run
    other = make_plan(engine, dag, days=2)
    create_backfill(engine, dag, other, now=NOW)

    with pytest.raises(RunChangedMeanwhile, match=r"a run for 2024-01-01T00:00:00\+00:00 was "):
        create_backfill(engine, dag, stale, now=NOW)

    assert len(rows(engine, backfills)) == 1
    assert len(rows(engine, dag_runs)) == 2
    assert len(rows(engine, task_instances)) == 6


def test_a_run_taken_over_meanwhile_is_a_conflict(engine: Engine) -> None:
    dag = make_dag()
    create_backfill(engine, dag, make_plan(engine, dag, days=1), now=NOW)
    finish_first_run(engine, {"b": TIState.FAILED}, RunState.FAILED)
    first = make_plan(engine, dag, days=1, reprocess=ReprocessPolicy.FAILED)
    second = make_plan(engine, dag, days=1, reprocess=ReprocessPolicy.FAILED)
    create_backfill(engine, dag, first, now=NOW)

    with pytest.raises(RunChangedMeanwhile, match="2024-01-01"):
        create_backfill(engine, dag, second, now=NOW)
    assert len(rows(engine, backfills)) == 2


def test_concurrent_creators_of_the_same_dates_exactly_one_wins(engine: Engine) -> None:
    dag = make_dag()
    plans = [make_plan(engine, dag) for _ in range(4)]
    barrier = threading.Barrier(len(plans))
    outcomes: list[object] = [None] * len(plans)

    def create(i: int) -> None:
        barrier.wait()
        try:
            outcomes[i] = create_backfill(engine, dag, plans[i], now=NOW)
        except RunChangedMeanwhile as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=create, args=(i,)) for i in range(len(plans))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)

    winners = [o for o in outcomes if isinstance(o, int)]
    assert len(winners) == 1, outcomes
    assert all(isinstance(o, RunChangedMeanwhile) for o in outcomes if o not in winners)
    assert [r.id for r in rows(engine, backfills)] == winners
    assert {r.backfill_id for r in rows(engine, dag_runs)} == set(winners)
    assert len(rows(engine, task_instances)) == 9


# --- options at creation: --task-regex, --rerun-failed-tasks, --pool ----------------------


def test_task_regex_creates_tis_of_the_selected_tasks_only(engine: Engine) -> None:
    dag = make_dag()
    plan = make_plan(engine, dag, days=2, task_regex="^[bc]$")
    create_backfill(engine, dag, plan, now=NOW)

    runs = rows(engine, dag_runs)
    assert len(runs) == 2
    for run in runs:
        assert sorted(tis_of(engine, run.id)) == ["b", "c"]  # no TI for a: not required
    assert len(rows(engine, task_instances)) == 4


def test_task_regex_resets_only_the_selected_tis_of_a_reprocessed_run(engine: Engine) -> None:
    dag = make_dag()
    create_backfill(engine, dag, make_plan(engine, dag, days=1), now=NOW)
    run_pk = finish_first_run(
        engine, {"a": TIState.SUCCESS, "b": TIState.FAILED, "c": TIState.FAILED}, RunState.FAILED
    )
    plan = make_plan(engine, dag, days=1, reprocess=ReprocessPolicy.COMPLETED, task_regex="a|c")

    create_backfill(engine, dag, plan, now=NOW)

    tis = tis_of(engine, run_pk)
    assert {t: r.state for t, r in tis.items()} == {"a": "none", "b": "failed", "c": "none"}


def test_rerun_failed_tasks_resets_exactly_the_failed_and_upstream_failed_tis(
    engine: Engine,
) -> None:
    dag = make_dag()
    first = create_backfill(engine, dag, make_plan(engine, dag, days=2), now=NOW)
    run_pk = finish_first_run(
        engine,
        {"a": TIState.FAILED, "b": TIState.UPSTREAM_FAILED, "c": TIState.SUCCESS},
        RunState.FAILED,
    )
    plan = make_plan(engine, dag, days=2, rerun_failed_tasks=True, pool="big")
    assert [(r.action, r.reason) for r in plan.runs] == [
        (Action.REPROCESS, "--rerun-failed-tasks: 2 failed TIs"),
        (Action.SKIP, "already exists: run is success"),  # its TIs are none, none failed
    ]

    second = create_backfill(engine, dag, plan, now=NOW)

    run = rows(engine, dag_runs, dag_runs.c.id == run_pk)[0]
    assert (run.backfill_id, run.state) == (second, RunState.QUEUED)
    tis = tis_of(engine, run_pk)
    # Cleared as Airflow clears: the try number keeps counting, max_tries = tries + retries.
    assert (tis["a"].state, tis["a"].try_number, tis["a"].max_tries) == ("none", 1, 1 + 0)
    assert (tis["b"].state, tis["b"].try_number, tis["b"].max_tries) == ("none", 1, 1 + 2)
    assert {tis["a"].pool, tis["b"].pool} == {"big"}  # --pool: every reset TI
    assert (tis["c"].state, tis["c"].pool, tis["c"].last_error) == (
        "success",
        "default_pool",
        "old",
    )
    cleared = {
        (r.task_instance_id, r.from_state)
        for r in rows(engine, ti_transitions)
        if r.actor == "coordinator:create"
    }
    assert cleared == {(tis["a"].id, "failed"), (tis["b"].id, "upstream_failed")}
    other = rows(engine, dag_runs, dag_runs.c.id != run_pk)[0]
    assert (other.backfill_id, other.state) == (first, RunState.SUCCESS)


def test_rerun_failed_tasks_never_reruns_a_ti_that_succeeded_meanwhile(engine: Engine) -> None:
    dag = make_dag()
    create_backfill(engine, dag, make_plan(engine, dag, days=1), now=NOW)
    run_pk = finish_first_run(engine, {"a": TIState.FAILED, "c": TIState.FAILED}, RunState.FAILED)
    plan = make_plan(engine, dag, days=1, rerun_failed_tasks=True)
    assert plan.runs[0].task_ids == ("a", "c")
    with engine.begin() as conn:  # someone else reran `c`, which succeeded this time
        where = sa.and_(task_instances.c.dag_run_id == run_pk, task_instances.c.task_id == "c")
        force_state(conn, task_instances, where, TIState.SUCCESS, try_number=2)
    counts = [len(rows(engine, t)) for t in (backfills, dag_runs, task_instances, ti_transitions)]

    with pytest.raises(RunChangedMeanwhile, match="2024-01-01"):
        create_backfill(engine, dag, plan, now=NOW)

    assert [
        len(rows(engine, t)) for t in (backfills, dag_runs, task_instances, ti_transitions)
    ] == counts
    tis = tis_of(engine, run_pk)
    assert (tis["a"].state, tis["c"].state, tis["c"].try_number) == ("failed", "success", 2)


def test_pool_overrides_the_pool_of_every_new_ti(engine: Engine) -> None:
    dag = make_dag()
    create_backfill(engine, dag, make_plan(engine, dag, days=2, pool="big"), now=NOW)
    tis = rows(engine, task_instances)
    assert len(tis) == 6
    assert {t.pool for t in tis} == {"big"}
    b = next(t for t in tis if t.task_id == "b")
    assert (b.queue, b.priority_weight, b.max_tries) == ("q_b", 5, 2)  # other options kept
