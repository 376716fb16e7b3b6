"""The coordinator's passes, one at a time, on hand-built states (SQLite and PostgreSQL).

Each test drives `Coordinator.run_pass` with an explicit clock and plays the
workers' part in-process through the real claim/finish statements
(`support.passes`); only the first publishes to a real broker (the module's
private Redis DB).
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import pendulum
import pytest
import sqlalchemy as sa
from kombu import Connection as KombuConnection
from sqlalchemy.engine import Engine
from support.passes import (
    D1,
    Clock,
    Recorder,
    backfill_state,
    claim_and_finish,
    diamond,
    drive_by_hand,
    new_backfill,
    noop,
    run_rows,
    set_backfill,
    settings_for,
    ti_states,
)
from support.private_redis import PrivateRedis
from support.waiting import wait_until

from backfill import DAG
from backfill.engine.coordinator import Coordinator, Outcome, Progress
from backfill.engine.create import run_id_for, task_specs
from backfill.engine.dispatch import Dispatcher
from backfill.engine.errors import DagChanged
from backfill.engine.passes import pools_of
from backfill.messages import TaskMessage
from backfill.model.states import BackfillState, TIState
from backfill.planning.backfill_plan import expand_range
from backfill.planning.run_options import RunOptions
from backfill.store import claims, runs
from backfill.store.runs import NewRun
from backfill.store.schema import backfills
from workers.app import make_app


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
    ended: list[tuple[str, str | None, str]] = []
    dag = diamond(
        on_success_callback=lambda ctx: ended.append(("success", ctx.reason, ctx.ds)),
        on_failure_callback=lambda ctx: ended.append(("failure", ctx.reason, ctx.ds)),
    )
    backfill_id = new_backfill(engine, dag, 4, max_active_runs=2)
    recorder = Recorder()
    coordinator = Coordinator(engine, settings_for(db_url, tmp_path), dag, publisher=recorder)

    def outcome(m: TaskMessage) -> TIState:
        failing = (m.task_id, m.logical_date) == ("a", D1.isoformat())
        return TIState.FAILED if failing else TIState.SUCCESS

    drive_by_hand(engine, coordinator, recorder, backfill_id, Clock(), outcome=outcome)
    # One callback per run that ran, once; the two that never started get none (Airflow
    # runs none for a state set from outside the run).
    assert sorted(ended) == [
        ("failure", "task_failure", D1.date().isoformat()),
        ("success", "success", (D1 + timedelta(days=1)).date().isoformat()),
    ]

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
    reasons: list[str | None] = []
    dag = DAG(
        "stuck",
        schedule="@daily",
        start_date=pendulum.datetime(2024, 1, 1),
        on_failure_callback=lambda ctx: reasons.append(ctx.reason),
    )
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
    assert reasons == ["all_tasks_deadlocked"]  # Airflow's reason for a deadlocked run
    # drive() on the ended backfill returns at once with its outcome; another
    # coordinator (a restart, HA) finds the run ended: its callback does not fire again.
    assert coordinator.drive(backfill_id).state is BackfillState.FAILED
    other = Coordinator(engine, settings_for(db_url, tmp_path), dag, publisher=Recorder())
    assert other.drive(backfill_id).state is BackfillState.FAILED
    assert reasons == ["all_tasks_deadlocked"]


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
    assert result.winding_down  # a try still runs: the drive is not over
    states = Counter(state for state, _ in ti_states(engine).values())
    assert states == {"none": 5, "scheduled": 3, "running": 1}
    # The run of the running try drains; the others end at once.
    assert sorted(r.state for r in run_rows(engine)) == ["failed", "failed", "running"]
    # A withdrawn message loses the claim; the running try still records its outcome.
    assert claim_and_finish(engine, messages[1], TIState.SUCCESS, now=clock.tick()) is None
    with engine.begin() as conn:
        assert claims.finish(conn, running, TIState.SUCCESS, actor="worker:test", now=clock.now)
    assert coordinator.drive(backfill_id).state is BackfillState.CANCELLED
    assert {r.state for r in run_rows(engine)} == {"failed"}


def test_a_cancelled_backfills_silent_try_is_reaped_and_its_run_ended(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    """A drain whose worker died: the silent try is reaped like any other, so the cancelled
    backfill is left with nothing running (DESIGN 6, Cancel)."""
    dag = diamond()
    backfill_id = new_backfill(engine, dag, 1)
    coordinator = Coordinator(
        engine, settings_for(db_url, tmp_path), dag, publisher=(recorder := Recorder())
    )
    clock = Clock()
    coordinator.run_pass(backfill_id, now=clock.tick())
    coordinator.run_pass(backfill_id, now=clock.tick())
    (message, _), *_ = recorder.take()
    assert claim_and_finish(engine, message, None, now=clock.tick()) is not None  # then dies
    set_backfill(engine, backfill_id, BackfillState.CANCELLED)
    assert coordinator.run_pass(backfill_id, now=clock.tick()).winding_down
    later = clock.tick(10.0)  # past the heartbeat timeout (3 s here)
    result = coordinator.run_pass(backfill_id, now=later)
    assert (result.reaped, result.winding_down) == (1, False)
    assert "running" not in {state for state, _ in ti_states(engine).values()}
    assert {r.state for r in run_rows(engine)} == {"failed"}


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


def test_a_driver_leaving_paused_backfills_returns_and_releases_the_lease(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    dag = diamond()
    backfill_id = new_backfill(engine, dag, 2)
    recorder = Recorder()  # no worker: the roots stay queued, the drive waits
    coordinator = Coordinator(engine, settings_for(db_url, tmp_path), dag, publisher=recorder)
    outcome: list[Outcome] = []
    driver = threading.Thread(
        target=lambda: outcome.append(coordinator.drive(backfill_id, leave_paused=True))
    )
    driver.start()
    try:
        wait_until(lambda: recorder.batches, timeout=10, what="the roots to be dispatched")
        set_backfill(engine, backfill_id, BackfillState.PAUSED)
        driver.join(10)  # the next pass, at most a poll interval away
    finally:
        if driver.is_alive():  # e.g. it waited through the pause: end it
            set_backfill(engine, backfill_id, BackfillState.CANCELLED)
            driver.join(10)
    assert outcome[0].state is BackfillState.PAUSED
    with engine.connect() as conn:
        row = conn.execute(sa.select(backfills.c.lease_owner, backfills.c.lease_epoch)).one()
    assert (row.lease_owner, row.lease_epoch) == (None, 1)  # held once, then released
    assert len(recorder.take()) == 4  # roots a and c of both runs; nothing since the pause


@pytest.mark.parametrize(
    ("state", "taken"),
    [("success", False), ("failed", False), ("cancelled", True)],  # cancelled: a wind-down
)
def test_the_lease_of_a_backfill_that_ended_for_good_is_not_taken(
    engine: Engine, db_url: str, tmp_path: Path, state: str, taken: bool
) -> None:
    dag = diamond()
    backfill_id = new_backfill(engine, dag, 1)
    set_backfill(engine, backfill_id, BackfillState(state))  # as if its driver ended it
    coordinator = Coordinator(engine, settings_for(db_url, tmp_path), dag, publisher=Recorder())

    held = coordinator.wait_for_lease(backfill_id, on_wait=lambda owner, until: None)

    with engine.connect() as conn:
        row = conn.execute(sa.select(backfills.c.lease_owner, backfills.c.lease_epoch)).one()
    assert (held, row.lease_owner, row.lease_epoch) == (
        (True, coordinator.owner, 1) if taken else (False, None, 0)
    )


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

    assert successor.wait_for_lease(backfill_id, on_wait=lambda o, t: seen.append((o, t)))

    assert time.monotonic() - started >= 0.5
    assert seen
    assert {owner for owner, _ in seen} == {"dead-host:1"}
    with engine.connect() as conn:
        row = conn.execute(sa.select(backfills.c.lease_owner, backfills.c.lease_epoch)).one()
    assert row.lease_owner == successor.owner
    assert row.lease_epoch == 2


def test_a_deposed_driver_plans_nothing_and_stands_by_until_its_successor_ends(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    dag = diamond()
    backfill_id = new_backfill(engine, dag, 1)
    settings = settings_for(db_url, tmp_path)
    successor = Coordinator(engine, settings, dag, owner="successor:1", publisher=Recorder())
    successor.run_pass(backfill_id, now=pendulum.now("UTC"))  # holds the lease
    told: list[str] = []
    deposed_sent = Recorder()
    deposed = Coordinator(engine, settings, dag, publisher=deposed_sent, on_notice=told.append)
    before = ti_states(engine)

    assert not deposed.run_pass(backfill_id).lease_held
    assert ti_states(engine) == before  # nothing planned, queued nor sent
    assert deposed_sent.batches == []

    ended = threading.Thread(
        target=lambda: set_backfill(engine, backfill_id, BackfillState.SUCCESS)
    )
    timer = threading.Timer(0.5, ended.start)  # the successor ends it while it stands by
    timer.start()
    outcome = deposed.drive(backfill_id)
    timer.join()
    ended.join()

    assert outcome.state is BackfillState.SUCCESS
    assert told == ["successor:1 took over the lease: standing by"]
    assert deposed_sent.batches == []


def test_a_changed_dag_is_refused(engine: Engine, db_url: str, tmp_path: Path) -> None:
    backfill_id = new_backfill(engine, diamond(), 1)
    changed = diamond(max_active_tasks=3)
    coordinator = Coordinator(engine, settings_for(db_url, tmp_path), changed, publisher=Recorder())
    with pytest.raises(DagChanged, match="changed since backfill"):
        coordinator.run_pass(backfill_id, now=pendulum.now("UTC"))


def test_a_queued_backfill_is_started_by_its_first_pass(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    dag = diamond()
    [interval] = expand_range(dag, pendulum.instance(D1), pendulum.instance(D1))
    new_run = NewRun(
        run_id=run_id_for(interval.logical_date),
        logical_date=interval.logical_date,
        data_interval_start=interval.start,
        data_interval_end=interval.end,
    )
    # Written by the store's own statements as a creation that leaves the backfill to a
    # coordinator would: queued, with its run and TIs (create_backfill starts it at once).
    with engine.begin() as conn:
        backfill_id = runs.insert_backfill(
            conn,
            dag_id=dag.dag_id,
            fingerprint=dag.fingerprint,
            start=interval.logical_date,
            end=interval.logical_date,
            options=RunOptions().as_json(),
            conf={},
            now=pendulum.now("UTC"),
        )
        runs.insert_runs(
            conn,
            backfill_id=backfill_id,
            dag_id=dag.dag_id,
            runs=[new_run],
            tasks=list(task_specs(dag).values()),
            conf={},
            now=pendulum.now("UTC"),
        )
    assert backfill_state(engine, backfill_id) is BackfillState.QUEUED
    coordinator = Coordinator(engine, settings_for(db_url, tmp_path), dag, publisher=Recorder())

    result = coordinator.run_pass(backfill_id, now=pendulum.now("UTC"))

    assert (result.state, result.again, result.lease_held) == (BackfillState.RUNNING, True, True)
    assert backfill_state(engine, backfill_id) is BackfillState.RUNNING
    assert [r.state for r in run_rows(engine)] == ["running"]
