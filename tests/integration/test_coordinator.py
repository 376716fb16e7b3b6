"""Whole backfills driven by a real coordinator on real `celery worker` processes.

On PostgreSQL + Redis (the module's private DB) and on SQLite + the embedded
`filesystem://` broker. The DAGs of tests/dags_engine append to the execution
ledger (`support.ledger`) on every callable start, so a try that ran twice
shows twice. The coordinator's passes on hand-built states are in
tests/store/test_passes.py and tests/store/test_policies.py.
"""

from __future__ import annotations

import itertools
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from support.passes import D1, ENGINE_DAGS, day, new_backfill, run_rows, spans
from support.private_redis import PrivateRedis
from support.processes import WorkerPool
from support.stack import Stack

from backfill.engine.coordinator import Coordinator, Outcome
from backfill.model.states import BackfillState
from backfill.planning.depends import BEHIND_BLOCKED_PAST
from backfill.planning.pass_planner import UPSTREAM_CANNOT_RUN
from backfill.store.db import create_engine_for, migrate
from backfill.store.schema import task_instances, ti_transitions

DEADLINE = 90.0  # seconds any backfill here may take before the test fails


def engine_stack(
    db_url: str, private: PrivateRedis | None, folder: Path, *, dags: Path = ENGINE_DAGS
) -> Stack:
    """The DAGs of tests/dags_engine, a 3 s heartbeat timeout, and the module's Redis DB
    (None: the embedded `filesystem://` broker)."""
    stack = Stack.create(db_url, private, folder).with_dags(dags)
    stack = stack.with_timeouts(heartbeat_timeout=3.0, queued_timeout=120.0)
    return stack if private is not None else stack.with_broker("filesystem://")


def drive(
    engine: Engine,
    stack: Stack,
    dag_id: str,
    days: int,
    *,
    first: datetime = D1,
    options: dict[str, Any] | None = None,
    **kwargs: Any,
) -> tuple[int, Outcome, float]:
    """Create a backfill of `dag_id` (`days` dates from `first`, with run `options`) and
    drive it with a real coordinator (`kwargs`); (id, outcome, seconds)."""
    dag = stack.dag(dag_id)
    backfill_id = new_backfill(engine, dag, days, first=first, **(options or {}))
    coordinator = Coordinator(engine, stack.settings(), dag, **kwargs)
    stop = threading.Event()
    timer = threading.Timer(DEADLINE, stop.set)
    timer.start()
    started = time.monotonic()
    try:
        outcome = coordinator.drive(backfill_id, stop=stop)
    finally:
        timer.cancel()
        coordinator.close()
    assert not stop.is_set(), f"backfill {backfill_id} did not end within {DEADLINE}s"
    return backfill_id, outcome, time.monotonic() - started


def example_ran_once_each(stack: Stack, days: int) -> None:
    tasks = ["runme_0", "runme_1", "runme_2", "run_after_loop", "also_run_this", "run_this_last"]
    expected = {("engine_example", t, day(i), 1): 1 for t in tasks for i in range(days)}
    assert stack.ledger.starts() == expected


@pytest.mark.postgres
def test_end_to_end_on_postgresql_and_redis(
    pg_url: str, broker: PrivateRedis, tmp_path: Path, workers: WorkerPool
) -> None:
    stack = engine_stack(pg_url, broker, tmp_path)
    engine = create_engine_for(pg_url)
    try:
        workers.start(stack, 2)
        _, outcome, _ = drive(engine, stack, "engine_example", 3)
        assert (outcome.state, outcome.failed, outcome.deadlock) == (
            BackfillState.SUCCESS,
            (),
            None,
        )
        example_ran_once_each(stack, 3)
        assert {r.state for r in run_rows(engine)} == {"success"}
        # Both workers took part.
        with engine.connect() as conn:
            claimants = set(conn.execute(sa.select(task_instances.c.claimant)).scalars())
        assert len(claimants) == 2
    finally:
        engine.dispose()


def test_end_to_end_on_the_embedded_default(tmp_path: Path, workers: WorkerPool) -> None:
    stack = engine_stack(f"sqlite:///{tmp_path / 'backfill.db'}", None, tmp_path)
    engine = create_engine_for(stack.db_url)
    try:
        migrate(engine)
        workers.start(stack, 2)
        _, outcome, _ = drive(engine, stack, "engine_example", 3)
        assert (outcome.state, outcome.failed) == (BackfillState.SUCCESS, ())
        example_ran_once_each(stack, 3)
    finally:
        engine.dispose()


def test_a_failing_task_fails_the_backfill(
    db_url: str, tmp_path: Path, workers: WorkerPool
) -> None:
    stack = engine_stack(db_url, None, tmp_path)
    engine = create_engine_for(db_url)
    try:
        workers.start(stack, 1)
        _, outcome, _ = drive(engine, stack, "engine_fail", 2)
        assert outcome.state is BackfillState.FAILED
        failed = {(k.task_id, k.logical_date, k.try_number): e for k, e in outcome.failed}
        assert failed == {
            ("boom", D1, 1): "ValueError: boom on 2024-01-01",
            ("after_boom", D1, 0): None,
        }
        # max_active_runs=1: the second date never started, nothing of it ran.
        assert stack.ledger.starts() == {
            ("engine_fail", "boom", D1, 1): 1,
            ("engine_fail", "side", D1, 1): 1,
        }
        assert [(r.state, r.start_date is None) for r in run_rows(engine)] == [
            ("failed", False),
            ("failed", True),
        ]
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_notify_wakes_the_coordinator_without_waiting_for_the_poll(
    pg_url: str, broker: PrivateRedis, tmp_path: Path, workers: WorkerPool
) -> None:
    stack = engine_stack(pg_url, broker, tmp_path)
    engine = create_engine_for(pg_url)
    try:
        workers.start(stack, 1)
        # With a 60 s poll fallback, 4 hops would take minutes without NOTIFY.
        _, outcome, seconds = drive(engine, stack, "engine_chain", 1, poll_interval=60.0)
        assert outcome.state is BackfillState.SUCCESS
        assert seconds < 20
        with engine.connect() as conn:
            journal = conn.execute(
                sa.select(task_instances.c.task_id, ti_transitions.c.to_state, ti_transitions.c.at)
                .select_from(ti_transitions.join(task_instances))
                .where(ti_transitions.c.to_state.in_(["success", "queued"]))
            ).all()
        at = {(task_id, state): when for task_id, state, when in journal}
        hops = [
            (at[(f"link_{i + 1}", "queued")] - at[(f"link_{i}", "success")]).total_seconds()
            for i in range(4)
        ]
        assert max(hops) < 0.5, hops  # milliseconds in practice; generous for a loaded CI
    finally:
        engine.dispose()


# A DAG written per test, so that its tasks can sleep: without depends_on_past two
# workers would run `step` of consecutive dates at the same time.
PAST_DAG = """
import time

import pendulum
from support.ledger import record as note

from backfill import DAG, Context


def record(ctx: Context) -> None:
    note("start", ctx)


dag = DAG(
    "engine_past",
    schedule="@daily",
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    max_active_runs=3,
)


@dag.task(depends_on_past=True)
def step(ctx: Context) -> None:
    record(ctx)
    time.sleep(0.4)


@dag.task
def after(ctx: Context) -> None:
    record(ctx)


@dag.task
def free(ctx: Context) -> None:
    record(ctx)


step >> after
"""


def test_depends_on_past_on_real_workers(db_url: str, tmp_path: Path, workers: WorkerPool) -> None:
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "past.py").write_text(PAST_DAG)
    stack = engine_stack(db_url, None, tmp_path, dags=dags)
    engine = create_engine_for(db_url)
    try:
        workers.start(stack, 2)
        # From the DAG's first date: `step` runs date after date, the rest alongside.
        _, outcome, _ = drive(engine, stack, "engine_past", 4)
        assert (outcome.state, outcome.failed, outcome.deadlock) == (
            BackfillState.SUCCESS,
            (),
            None,
        )
        steps = spans(engine, "step")
        assert [d for d, _, _ in steps] == [day(i) for i in range(4)]
        for (_, _, end), (_, start, _) in itertools.pairwise(steps):
            assert end <= start

        # Day 5 never ran: the range from day 6 deadlocks, saying why and what to do.
        _, outcome, _ = drive(engine, stack, "engine_past", 2, first=day(6))
        assert outcome.state is BackfillState.FAILED
        assert outcome.deadlock is not None
        found = {r: sorted(k.logical_date for k in keys) for r, keys in outcome.deadlock.items()}
        (gap,) = [r for r in found if r.startswith("depends_on_past: task 'step' has no run at")]
        assert "2024-01-06T00:00:00+00:00 (outside the range?)" in gap
        assert "--ignore-first-depends-on-past" in gap
        assert found[gap] == [day(6)]
        assert found[BEHIND_BLOCKED_PAST] == [day(7)]
        assert found[UPSTREAM_CANNOT_RUN] == [day(6), day(7)]  # `after` of both dates
        late = {e.task_id for e in stack.ledger.entries("start") if e.ds >= "2024-01-07"}
        assert late == {"free"}

        # The cure: run the failed dates again, the first one without its past.
        options = {"reprocess": "failed", "depends_on_past": "ignore_first"}
        _, outcome, _ = drive(engine, stack, "engine_past", 2, first=day(6), options=options)
        assert (outcome.state, outcome.deadlock) == (BackfillState.SUCCESS, None)
        steps = spans(engine, "step")
        assert [d for d, _, _ in steps] == [*(day(i) for i in range(4)), day(6), day(7)]
        assert steps[-2][2] <= steps[-1][1]
        assert set(stack.ledger.starts().values()) == {1}  # nothing ran twice
    finally:
        engine.dispose()
