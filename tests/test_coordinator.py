"""The coordinator: passes on hand-built states, then whole backfills on real workers.

Part 1 drives passes one at a time with an explicit clock and plays the
workers' part in-process through the real claim/finish statements
(`store.claims`), on SQLite and PostgreSQL. Part 2 runs real `celery -A
workers worker` processes on PostgreSQL + Redis and on SQLite + the
embedded `filesystem://` broker; the DAGs of tests/dags_engine append to a
ledger file on every callable start, so a try that ran twice shows twice.

Redis: each module run takes one empty DB index, marked with an owner key
(the same protocol as tests/integration), and deletes only its own keys.
"""

from __future__ import annotations

import itertools
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pendulum
import pytest
import sqlalchemy as sa
from kombu import Connection as KombuConnection
from sqlalchemy.engine import Engine
from support.private_redis import PrivateRedis, private_redis
from support.waiting import wait_until

from backfill import DAG, Context
from backfill.config import Settings
from backfill.engine.coordinator import Coordinator, Outcome, Progress
from backfill.engine.create import create_backfill
from backfill.engine.dispatch import Dispatcher
from backfill.engine.errors import DagChanged
from backfill.engine.passes import pools_of
from backfill.messages import TaskMessage
from backfill.model.discovery import load_dags
from backfill.model.states import BackfillState, TIState
from backfill.planning.backfill_plan import expand_range, plan_backfill
from backfill.planning.depends import BEHIND_BLOCKED_PAST, WAITING_FOR_PAST
from backfill.planning.pass_planner import UPSTREAM_CANNOT_RUN
from backfill.planning.run_options import RunOptions
from backfill.store import claims, reads, runs
from backfill.store.db import create_engine_for, migrate
from backfill.store.schema import backfills, dag_runs, pools, task_instances, ti_transitions
from workers.app import make_app

T = TypeVar("T")
PROJECT = Path(__file__).resolve().parents[1]
ENGINE_DAGS = PROJECT / "tests" / "dags_engine"
D1 = datetime(2024, 1, 1, tzinfo=UTC)
T0 = pendulum.datetime(2024, 6, 1, tz="UTC")

Message = tuple[TaskMessage, str]


# -- harness -----------------------------------------------------------------------------


class Recorder:
    """A publisher that keeps the messages (part 1 plays the workers itself)."""

    def __init__(self) -> None:
        self.batches: list[list[Message]] = []
        self.inbox: queue.Queue[Message] = queue.Queue()

    def publish(self, messages: Sequence[Message]) -> None:
        self.batches.append(list(messages))
        for m in messages:
            self.inbox.put(m)

    def take(self) -> list[Message]:
        out = []
        while not self.inbox.empty():
            out.append(self.inbox.get())
        return out


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def tick(self, seconds: float = 1.0) -> pendulum.DateTime:
        self.now = self.now + timedelta(seconds=seconds)
        return self.now


def noop(ctx: Context) -> None:
    pass


def settings_for(db_url: str, home: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "home": home,
        "database_url": db_url,
        "broker_url": "filesystem://",
        "dags_folder": ENGINE_DAGS,
        "heartbeat_interval": 0.5,
        "heartbeat_timeout": 3.0,
        "queued_timeout": 120.0,
    } | overrides
    return Settings(**values)


def new_backfill(
    engine: Engine, dag: DAG, days: int, *, first: datetime = D1, **options: Any
) -> int:
    start = pendulum.instance(first)
    intervals = expand_range(dag, start, start + timedelta(days=days - 1))
    with reads.reading(engine) as conn:
        existing = reads.existing_runs(conn, dag.dag_id, [i.logical_date for i in intervals])
    plan = plan_backfill(dag, intervals, existing, RunOptions(**options))
    return create_backfill(engine, dag, plan, now=T0)


def claim_and_finish(
    engine: Engine,
    message: TaskMessage,
    outcome: TIState | None,
    *,
    now: datetime,
    error: str | None = None,
) -> claims.Claim | None:
    """Play a worker: claim the try; finish it with `outcome` (None: leave it running)."""
    with engine.begin() as conn:
        won = claims.claim(
            conn,
            ti_id=message.ti_id,
            try_number=message.try_number,
            token=uuid.uuid4().hex,
            claimant="test:1",
            hostname="test",
            now=now,
        )
    if won is not None and outcome is not None:
        with engine.begin() as conn:
            assert claims.finish(conn, won, outcome, actor="worker:test", now=now, error=error)
    return won


def ti_states(engine: Engine) -> dict[tuple[datetime, str], tuple[str, int]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                dag_runs.c.logical_date,
                task_instances.c.task_id,
                task_instances.c.state,
                task_instances.c.try_number,
            ).select_from(task_instances.join(dag_runs))
        )
        return {(r.logical_date, r.task_id): (r.state, r.try_number) for r in rows}


def run_rows(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(dag_runs).order_by(dag_runs.c.logical_date)))


def backfill_state(engine: Engine, backfill_id: int) -> BackfillState:
    with engine.connect() as conn:
        state = conn.execute(
            sa.select(backfills.c.state).where(backfills.c.id == backfill_id)
        ).scalar_one()
    return BackfillState(state)


def set_backfill(engine: Engine, backfill_id: int, state: BackfillState) -> None:
    """What `backfill pause / resume / cancel` do to the row (a transition of the table)."""
    with engine.begin() as conn:
        assert runs.set_backfill_state(conn, backfill_id, state, now=pendulum.now("UTC"))


@pytest.fixture(scope="module")
def _redis_db() -> Iterator[PrivateRedis]:
    with private_redis("tests/test_coordinator.py") as private:
        yield private


@pytest.fixture
def broker(_redis_db: PrivateRedis) -> Iterator[PrivateRedis]:
    _redis_db.clear()
    yield _redis_db
    _redis_db.clear()


# -- part 1: passes on hand-built states ---------------------------------------------------


def diamond(queue_name: str = "default", **dag_args: Any) -> DAG:
    """a >> b, and c alone: roots a and c."""
    dag = DAG("coord_test", schedule="@daily", start_date=pendulum.datetime(2024, 1, 1), **dag_args)
    a = dag.add_task("a", noop, queue=queue_name)
    b = dag.add_task("b", noop, queue=queue_name)
    dag.add_task("c", noop, queue=queue_name)
    a >> b
    return dag


def test_a_pass_queues_exactly_the_ready_tis_and_publishes_one_message_each(
    engine: Engine, db_url: str, broker: PrivateRedis, tmp_path: Path
) -> None:
    queue_name = f"coord-{uuid.uuid4().hex[:8]}"
    dag = diamond(queue_name, max_active_runs=2)
    backfill_id = new_backfill(engine, dag, 3)
    settings = settings_for(db_url, tmp_path, broker_url=broker.url)
    app = make_app(settings)
    coordinator = Coordinator(engine, settings, dag, publisher=Dispatcher(app))
    clock = Clock()

    first = coordinator.run_pass(backfill_id, now=clock.tick())
    assert (first.changed, first.dispatched) == (True, 0)  # it started the window's 2 runs
    assert [r.state for r in run_rows(engine)] == ["running", "running", "queued"]

    second = coordinator.run_pass(backfill_id, now=clock.tick())
    day1, day2 = D1, D1 + timedelta(days=1)
    queued = {k for k, (state, _) in ti_states(engine).items() if state == "queued"}
    assert queued == {(day1, "a"), (day1, "c"), (day2, "a"), (day2, "c")}
    assert second.dispatched == 4

    with KombuConnection(broker.url) as conn, conn.SimpleQueue(queue_name, no_ack=True) as q:
        received = [q.get(timeout=5) for _ in range(4)]
        with pytest.raises(q.Empty):
            q.get(timeout=0.2)
    kwargs = [m.decode()[1] for m in received]
    got = {
        (datetime.fromisoformat(k["logical_date"]), k["task_id"], k["try_number"]) for k in kwargs
    }
    assert got == {(d, t, 1) for d, t in queued}
    assert {k["backfill_id"] for k in kwargs} == {backfill_id}
    assert {m.headers["task"] for m in received} == {"backfill.run_task_instance"}
    assert f"coord_test/a/{day1.isoformat()} try 1" in {m.headers["argsrepr"] for m in received}

    # Nothing new is ready: a pass changes nothing and publishes nothing.
    idle = coordinator.run_pass(backfill_id, now=clock.tick())
    assert (idle.changed, idle.dispatched) == (False, 0)
    # a of day 1 succeeds: exactly its downstream b is queued.
    a1 = next(
        TaskMessage(**k)
        for k in kwargs
        if (k["task_id"], k["logical_date"]) == ("a", day1.isoformat())
    )
    claim_and_finish(engine, a1, TIState.SUCCESS, now=clock.tick())
    third = coordinator.run_pass(backfill_id, now=clock.tick())
    assert third.dispatched == 1
    assert ti_states(engine)[(day1, "b")] == ("queued", 1)
    assert broker.client.llen(queue_name) == 1
    app.close()


def drive_by_hand(
    engine: Engine,
    coordinator: Coordinator,
    recorder: Recorder,
    backfill_id: int,
    clock: Clock,
    *,
    outcome: Callable[[TaskMessage], TIState] = lambda m: TIState.SUCCESS,
    hold: Callable[[TaskMessage], bool] = lambda m: False,
    max_passes: int = 200,
) -> list[int]:
    """Pass, then finish every published try (held ones later), until the backfill ends.

    Returns the number of running runs seen after each pass.
    """
    held: list[TaskMessage] = []
    running_seen = []
    for _ in range(max_passes):
        result = coordinator.run_pass(backfill_id, now=clock.tick())
        running_seen.append(sum(r.state == "running" for r in run_rows(engine)))
        if result.state is not BackfillState.RUNNING:
            return running_seen
        fresh = [m for m, _ in recorder.take()]
        held += [m for m in fresh if hold(m)]
        todo = [m for m in fresh if not hold(m)]
        if not todo and not result.changed and held:  # nothing else can move: release one
            todo.append(held.pop(0))
        for m in todo:
            claim_and_finish(engine, m, outcome(m), now=clock.tick(), error="ValueError: no")
    pytest.fail(f"backfill {backfill_id} did not end in {max_passes} passes")


def test_a_pass_locks_every_pool_its_tis_can_use() -> None:
    """The limits are locked before they are counted, so before the pass knows which
    TIs it will queue: the pools of every task, or `--pool` alone."""
    dag = DAG("pooled", schedule="@daily", start_date=pendulum.datetime(2024, 1, 1))
    dag.add_task("a", lambda ctx: None, pool="zeta")
    dag.add_task("b", lambda ctx: None, pool="alpha")
    dag.add_task("c", lambda ctx: None)
    assert pools_of(dag, RunOptions()) == ["alpha", "default_pool", "zeta"]
    assert pools_of(dag, RunOptions(pool="only")) == ["only"]


def test_runs_start_in_a_rolling_window(engine: Engine, db_url: str, tmp_path: Path) -> None:
    dag = DAG("window", schedule="@daily", start_date=pendulum.datetime(2024, 1, 1))
    dag.add_task("only", noop)
    backfill_id = new_backfill(engine, dag, 5, max_active_runs=2)
    recorder = Recorder()
    coordinator = Coordinator(engine, settings_for(db_url, tmp_path), dag, publisher=recorder)
    # The first date's try is held back while the others finish: a rolling
    # window starts the third run as soon as the second finishes.
    slow_date = D1.isoformat()

    running_seen = drive_by_hand(
        engine,
        coordinator,
        recorder,
        backfill_id,
        Clock(),
        hold=lambda m: m.logical_date == slow_date,
    )

    assert backfill_state(engine, backfill_id) is BackfillState.SUCCESS
    assert max(running_seen) == 2
    spans = [(r.start_date, r.end_date) for r in run_rows(engine)]
    assert all(start is not None and end is not None for start, end in spans)
    # Never more than 2 runs between start and end, at any instant.
    for start, _ in spans:
        assert sum(s <= start < e for s, e in spans) <= 2
    first_end = spans[0][1]
    assert spans[2][0] < first_end  # started while the first date was still running
    assert spans[4][0] < first_end


def test_a_failure_stops_new_runs_and_fails_the_backfill(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    dag = diamond()
    backfill_id = new_backfill(engine, dag, 4, max_active_runs=2)
    recorder = Recorder()
    coordinator = Coordinator(engine, settings_for(db_url, tmp_path), dag, publisher=recorder)

    def outcome(m: TaskMessage) -> TIState:
        failing = (m.task_id, m.logical_date) == ("a", D1.isoformat())
        return TIState.FAILED if failing else TIState.SUCCESS

    drive_by_hand(engine, coordinator, recorder, backfill_id, Clock(), outcome=outcome)

    assert backfill_state(engine, backfill_id) is BackfillState.FAILED
    states = ti_states(engine)
    assert states[(D1, "a")] == ("failed", 1)
    assert states[(D1, "b")] == ("upstream_failed", 0)
    runs_ = run_rows(engine)
    assert [r.state for r in runs_] == ["failed", "success", "failed", "failed"]
    # The two runs after the failure never started: nothing of theirs ran.
    assert [r.start_date is None for r in runs_] == [False, False, True, True]
    assert {states[(r.logical_date, "a")] for r in runs_[2:]} == {("none", 0)}

    outcome_ = coordinator.outcome(backfill_id)
    assert outcome_.state is BackfillState.FAILED
    failed = {(k.task_id, k.logical_date, k.try_number): err for k, err in outcome_.failed}
    assert failed == {("a", D1, 1): "ValueError: no", ("b", D1, 0): None}


def test_a_deadlock_fails_the_backfill_with_the_reason(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    dag = DAG("stuck", schedule="@daily", start_date=pendulum.datetime(2024, 1, 1))
    first = dag.add_task("first", noop)
    first >> dag.add_task("needs_pool", noop, pool="nowhere")
    backfill_id = new_backfill(engine, dag, 1)
    recorder = Recorder()
    coordinator = Coordinator(engine, settings_for(db_url, tmp_path), dag, publisher=recorder)
    clock = Clock()
    coordinator.run_pass(backfill_id, now=clock.tick())  # starts the run
    coordinator.run_pass(backfill_id, now=clock.tick())  # queues `first`
    (message,) = [m for m, _ in recorder.take()]
    claim_and_finish(engine, message, TIState.SUCCESS, now=clock.tick())

    result = coordinator.run_pass(backfill_id, now=clock.tick())

    assert result.state is BackfillState.FAILED
    assert result.deadlock is not None
    ((reason, keys),) = result.deadlock.items()
    assert "pool 'nowhere' does not exist" in reason
    assert [(k.task_id, k.logical_date, k.run_id) for k in keys] == [
        ("needs_pool", D1, f"backfill__{D1.isoformat()}")
    ]
    assert [r.state for r in run_rows(engine)] == ["failed"]  # not left "in flight"
    # drive() on the ended backfill returns at once with its outcome.
    assert coordinator.drive(backfill_id).state is BackfillState.FAILED


def test_a_stale_running_try_is_reaped_and_retried(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    dag = DAG("reap", schedule="@daily", start_date=pendulum.datetime(2024, 1, 1))
    dag.add_task("t", noop, retries=1, retry_delay=timedelta(seconds=10))
    backfill_id = new_backfill(engine, dag, 1)
    recorder = Recorder()
    coordinator = Coordinator(engine, settings_for(db_url, tmp_path), dag, publisher=recorder)
    clock = Clock()
    coordinator.run_pass(backfill_id, now=clock.tick())
    coordinator.run_pass(backfill_id, now=clock.tick())
    ((message, _),) = recorder.take()
    lost = claim_and_finish(engine, message, None, now=clock.tick())  # then the worker dies
    assert lost is not None

    quiet = coordinator.run_pass(backfill_id, now=clock.tick(2.0))  # within heartbeat_timeout
    assert (quiet.reaped, quiet.changed) == (0, False)
    reaped = coordinator.run_pass(backfill_id, now=clock.tick(2.0))
    assert reaped.reaped == 1
    assert ti_states(engine)[(D1, "t")] == ("up_for_retry", 1)
    assert reaped.next_due == clock.now + timedelta(seconds=10)
    # The dead worker's late outcome is refused: its claim is gone.
    with engine.begin() as conn:
        assert not claims.finish(conn, lost, TIState.SUCCESS, actor="worker:dead", now=clock.now)

    coordinator.run_pass(backfill_id, now=clock.tick(11))
    ((retry, _),) = recorder.take()
    assert (retry.ti_id, retry.try_number) == (message.ti_id, 2)
    claim_and_finish(engine, retry, TIState.SUCCESS, now=clock.tick())
    assert coordinator.run_pass(backfill_id, now=clock.tick()).state is BackfillState.SUCCESS


def test_a_lost_message_is_published_again_for_the_same_try(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    dag = DAG("lost", schedule="@daily", start_date=pendulum.datetime(2024, 1, 1))
    dag.add_task("t", noop)
    backfill_id = new_backfill(engine, dag, 1)
    recorder = Recorder()
    settings = settings_for(db_url, tmp_path, queued_timeout=30.0)
    coordinator = Coordinator(engine, settings, dag, publisher=recorder)
    clock = Clock()
    coordinator.run_pass(backfill_id, now=clock.tick())
    coordinator.run_pass(backfill_id, now=clock.tick())
    ((message, _),) = recorder.take()  # ...and the broker loses it

    assert coordinator.run_pass(backfill_id, now=clock.tick(29)).redispatched == 0
    again = coordinator.run_pass(backfill_id, now=clock.tick(2))
    assert (again.redispatched, again.dispatched) == (1, 1)
    ((resent, queue_name),) = recorder.take()
    assert (resent, queue_name) == (message, "default")  # the same try, not a new one
    assert ti_states(engine)[(D1, "t")] == ("queued", 1)


def test_a_cancelled_backfill_is_wound_down(engine: Engine, db_url: str, tmp_path: Path) -> None:
    dag = diamond()
    backfill_id = new_backfill(engine, dag, 3, max_active_runs=2)
    recorder = Recorder()
    coordinator = Coordinator(engine, settings_for(db_url, tmp_path), dag, publisher=recorder)
    clock = Clock()
    coordinator.run_pass(backfill_id, now=clock.tick())
    coordinator.run_pass(backfill_id, now=clock.tick())
    messages = [m for m, _ in recorder.take()]
    running = claim_and_finish(engine, messages[0], None, now=clock.tick())
    assert running is not None
    set_backfill(engine, backfill_id, BackfillState.CANCELLED)

    result = coordinator.run_pass(backfill_id, now=clock.tick())

    assert (result.state, result.dispatched) == (BackfillState.CANCELLED, 0)
    states = Counter(state for state, _ in ti_states(engine).values())
    assert states == {"none": 5, "scheduled": 3, "running": 1}
    assert {r.state for r in run_rows(engine)} == {"failed"}
    # A withdrawn message loses the claim; the running try still records its outcome.
    assert claim_and_finish(engine, messages[1], TIState.SUCCESS, now=clock.tick()) is None
    with engine.begin() as conn:
        assert claims.finish(conn, running, TIState.SUCCESS, actor="worker:test", now=clock.now)
    assert coordinator.drive(backfill_id).state is BackfillState.CANCELLED


def in_process_worker(engine: Engine, recorder: Recorder, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            message, _ = recorder.inbox.get(timeout=0.05)
        except queue.Empty:
            continue
        claim_and_finish(engine, message, TIState.SUCCESS, now=pendulum.now("UTC"))


def test_a_paused_backfill_waits_without_dispatching_until_resumed(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    dag = diamond()
    backfill_id = new_backfill(engine, dag, 2)
    set_backfill(engine, backfill_id, BackfillState.PAUSED)
    recorder = Recorder()
    coordinator = Coordinator(engine, settings_for(db_url, tmp_path), dag, publisher=recorder)
    stop = threading.Event()
    worker = threading.Thread(target=in_process_worker, args=(engine, recorder, stop))
    worker.start()
    progress: list[Progress] = []
    outcome: list[Outcome] = []
    driver = threading.Thread(
        target=lambda: outcome.append(coordinator.drive(backfill_id, on_progress=progress.append))
    )
    try:
        driver.start()
        # Two progress reports: the coordinator made passes while paused.
        wait_until(lambda: len(progress) >= 2, timeout=10, what="passes over the paused backfill")
        with engine.connect() as conn:
            owner = conn.execute(sa.select(backfills.c.lease_owner)).scalar_one()
        assert owner == coordinator.owner
        assert recorder.batches == []
        assert {r.state for r in run_rows(engine)} == {"queued"}
        assert progress[-1].state is BackfillState.PAUSED

        set_backfill(engine, backfill_id, BackfillState.RUNNING)
        driver.join(30)
    finally:
        stop.set()
        worker.join(10)
    assert not driver.is_alive()
    assert outcome[0].state is BackfillState.SUCCESS
    assert outcome[0].failed == ()
    assert progress[-1].state is BackfillState.SUCCESS
    assert progress[-1].runs == {"success": 2}
    assert progress[-1].task_instances == {"success": 6}
    with engine.connect() as conn:  # drive() released the lease
        assert conn.execute(sa.select(backfills.c.lease_owner)).scalar_one() is None


def test_stop_leaves_the_backfill_resumable_and_releases_the_lease(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    dag = diamond()
    backfill_id = new_backfill(engine, dag, 2)
    stop = threading.Event()
    stop.set()  # e.g. Ctrl-C: drive makes one pass and returns
    coordinator = Coordinator(engine, settings_for(db_url, tmp_path), dag, publisher=Recorder())

    outcome = coordinator.drive(backfill_id, stop=stop)

    assert outcome.state is BackfillState.RUNNING
    with engine.connect() as conn:
        assert conn.execute(sa.select(backfills.c.lease_owner)).scalar_one() is None


def test_resume_waits_for_a_dead_drivers_lease_to_lapse(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    dag = diamond()
    backfill_id = new_backfill(engine, dag, 1)
    settings = settings_for(db_url, tmp_path, heartbeat_interval=0.2, heartbeat_timeout=1.0)
    dead = Coordinator(engine, settings, dag, owner="dead-host:1", publisher=Recorder())
    dead.run_pass(backfill_id, now=pendulum.now("UTC"))  # takes the lease, then "dies"
    successor = Coordinator(engine, settings, dag, publisher=Recorder())
    seen: list[tuple[str, datetime]] = []
    started = time.monotonic()

    successor.wait_for_lease(backfill_id, on_wait=lambda o, t: seen.append((o, t)))

    assert time.monotonic() - started >= 0.5
    assert seen
    assert {owner for owner, _ in seen} == {"dead-host:1"}
    with engine.connect() as conn:
        row = conn.execute(sa.select(backfills.c.lease_owner, backfills.c.lease_epoch)).one()
    assert row.lease_owner == successor.owner
    assert row.lease_epoch == 2


def test_a_changed_dag_is_refused(engine: Engine, db_url: str, tmp_path: Path) -> None:
    backfill_id = new_backfill(engine, diamond(), 1)
    changed = diamond(max_active_tasks=3)
    coordinator = Coordinator(engine, settings_for(db_url, tmp_path), changed, publisher=Recorder())
    with pytest.raises(DagChanged, match="changed since backfill"):
        coordinator.run_pass(backfill_id, now=pendulum.now("UTC"))


def test_a_queued_backfill_is_started_by_its_first_pass(
    engine: Engine, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dag = diamond()
    with monkeypatch.context() as m:  # as if created for a coordinator: left queued
        m.setattr(runs, "set_backfill_state", lambda *_, **__: True)
        backfill_id = new_backfill(engine, dag, 1)
    assert backfill_state(engine, backfill_id) is BackfillState.QUEUED
    coordinator = Coordinator(engine, settings_for(db_url, tmp_path), dag, publisher=Recorder())

    result = coordinator.run_pass(backfill_id, now=pendulum.now("UTC"))

    assert (result.state, result.again, result.lease_held) == (BackfillState.RUNNING, True, True)
    assert backfill_state(engine, backfill_id) is BackfillState.RUNNING
    assert [r.state for r in run_rows(engine)] == ["running"]


# -- part 1: policies, depends_on_past and limits, pass by pass -------------------------


def started_order(engine: Engine) -> list[datetime]:
    """Logical dates of the runs that started, in the order they started."""
    started = [r for r in run_rows(engine) if r.start_date is not None]
    return [r.logical_date for r in sorted(started, key=lambda r: (r.start_date, r.id))]


def spans(engine: Engine, task_id: str) -> list[tuple[datetime, datetime, datetime]]:
    """(logical date, start, end) of each run of `task_id` that ran, by logical date."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                dag_runs.c.logical_date, task_instances.c.start_date, task_instances.c.end_date
            )
            .select_from(task_instances.join(dag_runs))
            .where(task_instances.c.task_id == task_id, task_instances.c.start_date.is_not(None))
            .order_by(dag_runs.c.logical_date)
        )
        return [(r.logical_date, r.start_date, r.end_date) for r in rows]


def day(n: int) -> datetime:
    return D1 + timedelta(days=n)


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


# -- part 2: real workers ------------------------------------------------------------------

DEADLINE = 90.0  # seconds any backfill of part 2 may take before the test fails


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    log: Path

    def is_ready(self) -> bool:
        return self.log.exists() and " ready." in self.log.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the worker and its pool process (its own process group)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)


@dataclass
class Stack:
    """What the workers, the coordinator and the test share."""

    settings: Settings
    ledger: Path
    tmp: Path

    def env(self) -> dict[str, str]:
        s = self.settings
        return os.environ | {
            "BACKFILL_HOME": str(s.home),
            "BACKFILL_DATABASE_URL": s.database_url,
            "BACKFILL_BROKER_URL": s.broker_url,
            "BACKFILL_DAGS_FOLDER": str(s.dags_folder),
            "BACKFILL_HEARTBEAT_INTERVAL": str(s.heartbeat_interval),
            "BACKFILL_HEARTBEAT_TIMEOUT": str(s.heartbeat_timeout),
            "BACKFILL_QUEUED_TIMEOUT": str(s.queued_timeout),
            "BACKFILL_TEST_LEDGER": str(self.ledger),
        }

    def starts(self) -> Counter[tuple[str, str, str, int]]:
        """How many times each (dag_id, task_id, ds, try) callable started."""
        if not self.ledger.exists():
            return Counter()
        lines = self.ledger.read_text().splitlines()
        return Counter((d, t, ds, int(n)) for d, t, ds, n, _pid in (x.split() for x in lines))


@pytest.fixture
def spawn() -> Iterator[Callable[[Stack, int], list[Worker]]]:
    started: list[Worker] = []

    def start(stack: Stack, count: int) -> list[Worker]:
        batch = []
        for _ in range(count):
            name = f"w{len(started)}-{uuid.uuid4().hex[:6]}"
            log = stack.tmp / f"{name}.log"
            with log.open("wb") as out:
                process = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "celery",
                        "-A",
                        "workers",
                        "worker",
                        "-c",
                        "1",
                        "--without-mingle",
                        "--without-gossip",
                        "--without-heartbeat",
                        "-n",
                        f"{name}@%h",
                        "--loglevel",
                        "INFO",
                    ],
                    cwd=PROJECT,
                    env=stack.env(),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group, pool included
                )
            batch.append(Worker(process, log))
        started.extend(batch)
        for worker in batch:
            wait_until(worker.is_ready, timeout=60, what=f"worker {worker.log.name} ready")
        return batch

    yield start
    for worker in started:
        worker.kill()


def pg_stack(pg_url: str, broker: PrivateRedis, tmp_path: Path, **overrides: Any) -> Stack:
    settings = settings_for(pg_url, tmp_path / "home", broker_url=broker.url, **overrides)
    return Stack(settings, tmp_path / "ledger.txt", tmp_path)


def embedded_stack(db_url: str, tmp_path: Path, **overrides: Any) -> Stack:
    settings = settings_for(db_url, tmp_path / "home", broker_url="filesystem://", **overrides)
    return Stack(settings, tmp_path / "ledger.txt", tmp_path)


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
    dag = load_dags(stack.settings.dags_folder).get(dag_id)
    backfill_id = new_backfill(engine, dag, days, first=first, **(options or {}))
    coordinator = Coordinator(engine, stack.settings, dag, **kwargs)
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
    dates = [(D1 + timedelta(days=i)).date().isoformat() for i in range(days)]
    expected = {("engine_example", t, ds, 1): 1 for t in tasks for ds in dates}
    assert stack.starts() == expected


@pytest.mark.postgres
def test_end_to_end_on_postgresql_and_redis(
    pg_url: str, broker: PrivateRedis, tmp_path: Path, spawn: Any
) -> None:
    stack = pg_stack(pg_url, broker, tmp_path)
    engine = create_engine_for(pg_url)
    try:
        spawn(stack, 2)
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


def test_end_to_end_on_the_embedded_default(tmp_path: Path, spawn: Any) -> None:
    stack = embedded_stack(f"sqlite:///{tmp_path / 'backfill.db'}", tmp_path)
    engine = create_engine_for(stack.settings.database_url)
    try:
        migrate(engine)
        spawn(stack, 2)
        _, outcome, _ = drive(engine, stack, "engine_example", 3)
        assert (outcome.state, outcome.failed) == (BackfillState.SUCCESS, ())
        example_ran_once_each(stack, 3)
    finally:
        engine.dispose()


def test_a_failing_task_fails_the_backfill(db_url: str, tmp_path: Path, spawn: Any) -> None:
    stack = embedded_stack(db_url, tmp_path)
    engine = create_engine_for(db_url)
    try:
        spawn(stack, 1)
        _, outcome, _ = drive(engine, stack, "engine_fail", 2)
        assert outcome.state is BackfillState.FAILED
        failed = {(k.task_id, k.logical_date, k.try_number): e for k, e in outcome.failed}
        assert failed == {
            ("boom", D1, 1): "ValueError: boom on 2024-01-01",
            ("after_boom", D1, 0): None,
        }
        # max_active_runs=1: the second date never started, nothing of it ran.
        assert stack.starts() == {
            ("engine_fail", "boom", "2024-01-01", 1): 1,
            ("engine_fail", "side", "2024-01-01", 1): 1,
        }
        assert [(r.state, r.start_date is None) for r in run_rows(engine)] == [
            ("failed", False),
            ("failed", True),
        ]
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_a_worker_killed_mid_task_is_reaped_and_its_ti_retried(
    pg_url: str, broker: PrivateRedis, tmp_path: Path, spawn: Any
) -> None:
    stack = pg_stack(pg_url, broker, tmp_path)
    engine = create_engine_for(pg_url)
    try:
        workers = spawn(stack, 2)
        result: list[Any] = []
        driver = threading.Thread(
            target=lambda: result.append(drive(engine, stack, "engine_slow", 1))
        )
        driver.start()

        def claimant_of_sleepy() -> str | None:
            with engine.connect() as conn:
                return conn.execute(
                    sa.select(task_instances.c.claimant).where(
                        task_instances.c.task_id == "sleepy",
                        task_instances.c.state == TIState.RUNNING.value,
                    )
                ).scalar_one_or_none()

        claimant = wait_until(claimant_of_sleepy, timeout=30, what="sleepy running")
        wait_until(stack.starts, timeout=10, what="sleepy's callable started")
        group = os.getpgid(int(claimant.rsplit(":", 1)[1]))
        (victim,) = [w for w in workers if w.process.pid == group]
        victim.kill()
        driver.join(DEADLINE + 10)

        ((_, outcome, _),) = result
        assert outcome.state is BackfillState.SUCCESS
        assert stack.starts() == {
            ("engine_slow", "sleepy", "2024-01-01", 1): 1,
            ("engine_slow", "sleepy", "2024-01-01", 2): 1,
            ("engine_slow", "after_sleepy", "2024-01-01", 1): 1,
        }
        with engine.connect() as conn:
            reaps = (
                conn.execute(
                    sa.select(ti_transitions.c.actor).where(
                        ti_transitions.c.from_state == "running",
                        ti_transitions.c.to_state == "up_for_retry",
                    )
                )
                .scalars()
                .all()
            )
        assert len(reaps) == 1
        assert reaps[0].startswith("coordinator:")
    finally:
        engine.dispose()


class DropFirstBatch:
    """Publishes through a real Dispatcher, except the first batch: a lost message."""

    def __init__(self, inner: Dispatcher) -> None:
        self.inner = inner
        self.dropped: list[Message] = []

    def publish(self, messages: Sequence[Message]) -> None:
        if not self.dropped and messages:
            self.dropped = list(messages)
            return
        self.inner.publish(messages)


@pytest.mark.postgres
def test_a_lost_message_is_redispatched_after_the_queued_timeout(
    pg_url: str, broker: PrivateRedis, tmp_path: Path, spawn: Any
) -> None:
    stack = pg_stack(pg_url, broker, tmp_path, queued_timeout=2.0)
    engine = create_engine_for(pg_url)
    publisher = DropFirstBatch(Dispatcher(make_app(stack.settings)))
    try:
        spawn(stack, 1)
        _, outcome, seconds = drive(engine, stack, "engine_chain", 1, publisher=publisher)
        assert outcome.state is BackfillState.SUCCESS
        assert [m.task_id for m, _ in publisher.dropped] == ["link_0"]
        assert seconds >= 2.0  # link_0 waited for the queued timeout
        # Re-sent for the same try: every link ran once, as try 1.
        assert stack.starts() == {
            ("engine_chain", f"link_{i}", "2024-01-01", 1): 1 for i in range(5)
        }
    finally:
        publisher.inner.close()
        engine.dispose()


@pytest.mark.postgres
def test_notify_wakes_the_coordinator_without_waiting_for_the_poll(
    pg_url: str, broker: PrivateRedis, tmp_path: Path, spawn: Any
) -> None:
    stack = pg_stack(pg_url, broker, tmp_path)
    engine = create_engine_for(pg_url)
    try:
        spawn(stack, 1)
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
import os
import time

import pendulum

from backfill import DAG, Context


def record(ctx: Context) -> None:
    line = f"{ctx.dag_id} {ctx.task_id} {ctx.ds} {ctx.try_number} {os.getpid()}\\n"
    fd = os.open(os.environ["BACKFILL_TEST_LEDGER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


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


def test_depends_on_past_on_real_workers(db_url: str, tmp_path: Path, spawn: Any) -> None:
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "past.py").write_text(PAST_DAG)
    stack = embedded_stack(db_url, tmp_path, dags_folder=dags)
    engine = create_engine_for(db_url)
    try:
        spawn(stack, 2)
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
        ledger = stack.starts()
        assert {t for (_, t, ds, _) in ledger if ds >= "2024-01-07"} == {"free"}

        # The cure: run the failed dates again, the first one without its past.
        options = {"reprocess": "failed", "depends_on_past": "ignore_first"}
        _, outcome, _ = drive(engine, stack, "engine_past", 2, first=day(6), options=options)
        assert (outcome.state, outcome.deadlock) == (BackfillState.SUCCESS, None)
        steps = spans(engine, "step")
        assert [d for d, _, _ in steps] == [*(day(i) for i in range(4)), day(6), day(7)]
        assert steps[-2][2] <= steps[-1][1]
        assert set(stack.starts().values()) == {1}  # nothing ran twice
    finally:
        engine.dispose()
