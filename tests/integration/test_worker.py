"""The worker task end to end: real `celery -A workers worker` processes, real brokers.

Each test puts TIs in `queued` itself (`support.factories`), publishes their
messages with `make_app(...).send_task` (no coordinator involved) and polls the
database until the worker has written its outcome. Workers (`support.processes`)
consume the module's private Redis DB (`broker`) or the embedded `filesystem://`
broker, and are killed in teardown. Every callable appends to the execution
ledger (tests/dags_worker/probe.py, `support.ledger`), which counts executions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pendulum
import pytest
from sqlalchemy.engine import Engine
from support.factories import COORDINATOR, queued_backfill
from support.ledger import Entry
from support.private_redis import PrivateRedis
from support.processes import WorkerPool
from support.rows import journal, row_of
from support.stack import Stack
from support.waiting import wait_until

from backfill.engine.dispatch import Dispatcher
from backfill.messages import TASK_NAME, TaskMessage
from backfill.model.context import Context, Reschedule, Skip
from backfill.model.discovery import load_dags
from backfill.model.states import TIState
from backfill.planning.run_options import Execution, RunOptions
from backfill.signing import sign
from backfill.store.db import create_engine_for
from workers.app import make_app
from workers.execute import Ending, Result, execute

DAGS = Path(__file__).resolve().parents[1] / "dags_worker"
BAG = load_dags(DAGS)
LOGICAL_DATE = pendulum.datetime(2024, 3, 31, 22, tz="UTC")  # 2024-04-01 in Paris
DEADLINE = 60.0  # seconds to wait for any condition: generous, never a fixed sleep
T = TypeVar("T")


MOVE = ("from_state", "to_state", "actor")  # the journal columns these tests compare


def worker_stack(db_url: str, private: PrivateRedis | None, folder: Path) -> Stack:
    """The tests' Stack: the probe DAGs, heartbeats every 0.2 s, reaped after 2 s;
    without a private Redis DB, the embedded `filesystem://` broker."""
    stack = Stack.create(db_url, private, folder).with_dags(DAGS)
    stack = stack.with_timeouts(heartbeat_interval=0.2, heartbeat_timeout=2.0)
    return stack if private is not None else stack.with_broker("filesystem://")


@pytest.fixture
def stack(db_url: str, backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Stack:
    """SQLite with the embedded filesystem:// broker, PostgreSQL with Redis."""
    private = None if backend == "sqlite" else request.getfixturevalue("broker")
    return worker_stack(db_url, private, tmp_path)


@pytest.fixture
def redis_stack(pg_url: str, broker: PrivateRedis, tmp_path: Path) -> Stack:
    return worker_stack(pg_url, broker, tmp_path)


@pytest.fixture
def db(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """An engine on the database of the test's stack (`stack` or `redis_stack`)."""
    name = "redis_stack" if "redis_stack" in request.fixturenames else "stack"
    engine = create_engine_for(request.getfixturevalue(name).db_url)
    yield engine
    engine.dispose()


def publish(stack: Stack, message: TaskMessage) -> None:
    send_raw(stack, kwargs=message.kwargs(), argsrepr=message.describe())


def send_raw(stack: Stack, **options: Any) -> None:
    """`send_task` of the worker's task, with `options` as they are (forgeries too)."""
    app = make_app(stack.settings())
    try:
        app.send_task(TASK_NAME, queue="default", **options)
    finally:
        app.close()


# -- putting TIs in `queued`, reading them back --------------------------------------


def queue_tis(
    engine: Engine,
    dag_id: str,
    task_ids: list[str],
    *,
    fingerprint: str | None = None,
    options: RunOptions | None = None,
) -> dict[str, TaskMessage]:
    """A backfill of one run of `task_ids`, each TI queued for try 1; their messages."""
    dag = BAG.get(dag_id)
    queued = queued_backfill(
        engine,
        dag_id=dag_id,
        tasks={tid: dag.tasks[tid].options.retries for tid in task_ids},
        fingerprint=fingerprint or dag.fingerprint,
        logical_date=LOGICAL_DATE,
        options=None if options is None else options.as_json(),
    )
    return {
        tid: TaskMessage(
            ti_id=queued.ti_ids[tid],
            try_number=1,
            backfill_id=queued.backfill_id,
            dag_id=dag_id,
            task_id=tid,
            logical_date=LOGICAL_DATE.isoformat(),
        )
        for tid in task_ids
    }


def wait_for(workers: WorkerPool, condition: Callable[[], T | None], what: str) -> T:
    return wait_until(condition, timeout=DEADLINE, what=what, explain=workers.logs_tail)


def wait_state(
    engine: Engine, workers: WorkerPool, message: TaskMessage, *states: TIState
) -> dict[str, Any]:
    wanted = {s.value for s in states}

    def reached() -> dict[str, Any] | None:
        row = row_of(engine, message.ti_id)
        return row if row["state"] in wanted else None

    return wait_for(workers, reached, f"{message.describe()} to be {'/'.join(sorted(wanted))}")


def ran(stack: Stack, task_id: str, event: str = "ran") -> list[Entry]:
    return stack.ledger.events(task_id, event)


# -- outcomes -------------------------------------------------------------------------


def test_every_outcome_is_recorded(stack: Stack, db: Engine, workers: WorkerPool) -> None:
    probe = queue_tis(db, "worker_probe", ["ok", "boom", "boom_final", "skipper", "sensor"])
    paris = queue_tis(db, "worker_paris", ["local_day"])
    workers.start(stack, 1)
    for message in [*probe.values(), *paris.values()]:
        publish(stack, message)

    ok = wait_state(db, workers, probe["ok"], TIState.SUCCESS)
    claimant = ok["claimant"]
    assert ok["last_error"] is None
    assert ok["end_date"] >= ok["start_date"]
    assert journal(db, ok["id"], *MOVE) == [
        ("none", "queued", COORDINATOR),
        ("queued", "running", f"worker:{claimant}"),
        ("running", "success", f"worker:{claimant}"),
    ]
    pid = int(claimant.rsplit(":", 1)[1])
    assert [(e.ds, e.try_number, e.pid) for e in ran(stack, "ok")] == [("2024-03-31", 1, pid)]

    boom = wait_state(db, workers, probe["boom"], TIState.UP_FOR_RETRY)  # retries=1: one left
    assert boom["last_error"] == "ValueError: boom on 2024-03-31 second line"
    assert boom["next_try_at"] - boom["end_date"] == pytest.approx(
        timedelta(seconds=30), abs=timedelta(seconds=1)
    )
    assert boom["try_number"] == 1

    final = wait_state(db, workers, probe["boom_final"], TIState.FAILED)  # retries=0
    assert (final["last_error"], final["next_try_at"]) == ("ValueError: boom for good", None)

    skipped = wait_state(db, workers, probe["skipper"], TIState.SKIPPED)
    assert skipped["last_error"] is None

    sensor = wait_state(db, workers, probe["sensor"], TIState.UP_FOR_RESCHEDULE)
    assert sensor["next_try_at"] - sensor["end_date"] == pytest.approx(
        timedelta(seconds=60), abs=timedelta(seconds=1)
    )
    assert sensor["try_number"] == 1

    wait_state(db, workers, paris["local_day"], TIState.SUCCESS)
    # The DAG's timezone decides ds: 22:00 UTC on March 31 is April 1 in Paris.
    [entry] = ran(stack, "local_day")
    assert (entry.ds, entry.try_number, entry.logical_date.isoformat()) == (
        "2024-04-01",
        1,
        "2024-03-31T22:00:00+00:00",
    )
    for task_id in ("boom", "boom_final", "skipper", "sensor"):
        assert len(ran(stack, task_id)) == 1, task_id


def test_mark_success_claims_and_finishes_without_calling_the_task(
    stack: Stack, db: Engine, workers: WorkerPool
) -> None:
    marked = RunOptions(execution=Execution.MARK_SUCCESS)
    messages = queue_tis(db, "worker_probe", ["ok", "boom_final", "hang"], options=marked)
    [worker] = workers.start(stack, 1)
    for message in messages.values():
        publish(stack, message)

    for task_id, message in messages.items():
        row = wait_state(db, workers, message, TIState.SUCCESS)  # even the task that raises
        claimant = row["claimant"]
        assert (row["try_number"], row["last_error"]) == (1, None), task_id
        assert journal(db, row["id"], *MOVE) == [
            ("none", "queued", COORDINATOR),
            ("queued", "running", f"worker:{claimant}"),  # claimed like any try
            ("running", "success", f"worker:{claimant}"),
        ]
    assert stack.ledger.entries() == []  # no callable ran: every task writes its ledger first
    wait_for(
        workers,
        lambda: worker.count("--mark-success: marked success without running the task") == 3,
        "the worker to log each TI it marked",
    )


def test_execution_timeout_stops_the_callable(
    redis_stack: Stack, db: Engine, workers: WorkerPool
) -> None:
    [message] = queue_tis(db, "worker_probe", ["slow"]).values()  # execution_timeout=1s
    workers.start(redis_stack, 1)
    publish(redis_stack, message)
    row = wait_state(db, workers, message, TIState.FAILED)
    assert row["last_error"].startswith(
        "ExecutionTimeout: the task ran longer than its execution_timeout of 1s"
    )
    assert row["end_date"] - row["start_date"] < timedelta(seconds=20)  # it sleeps 60s
    events = [e.event for e in redis_stack.ledger.entries()]
    assert events == ["start", "stopped:Interrupted"]  # never "after"


class _Tripwire:
    """Unpickling this creates a file: proof that a pickle payload was deserialized."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


def test_forged_and_pickled_messages_have_no_effect(
    redis_stack: Stack, broker: PrivateRedis, db: Engine, workers: WorkerPool
) -> None:
    stack = redis_stack
    [message] = queue_tis(db, "worker_probe", ["ok"]).values()
    good = message.kwargs()
    [worker] = workers.start(stack, 1)
    tripwire = stack.home / "unpickled"
    send_raw(stack, kwargs={"ti_id": message.ti_id})  # missing keys
    send_raw(stack, kwargs={**good, "extra": 1})
    send_raw(stack, kwargs={**good, "ti_id": str(message.ti_id)})  # wrong type
    send_raw(stack, args=[message.ti_id, 1])  # positional
    send_raw(stack, kwargs={**good, "ti_id": message.ti_id + 10_000})  # no such TI
    send_raw(stack, kwargs={**good, "try_number": 2})  # not the queued try
    send_raw(stack, kwargs={**good, "x": _Tripwire(tripwire)}, serializer="pickle")
    wait_for(workers, lambda: worker.count("malformed message acked as a no-op") == 4, "4 refusals")
    wait_for(workers, lambda: worker.count("lost the claim race") == 2, "2 stale messages acked")
    refusal = "Refusing to deserialize untrusted content of type pickle"
    wait_for(workers, lambda: refusal in worker.output(), "the pickle message to be refused")
    assert not tripwire.exists()
    assert row_of(db, message.ti_id)["state"] == "queued"
    assert stack.ledger.entries() == []

    publish(stack, message)  # the genuine one still runs: nothing above was left behind
    wait_state(db, workers, message, TIState.SUCCESS)
    assert len(ran(stack, "ok")) == 1
    assert broker.queue_length("default") == 0  # every message above was acked, none requeued


def test_with_a_message_key_a_worker_runs_only_messages_signed_with_it(
    redis_stack: Stack, broker: PrivateRedis, db: Engine, workers: WorkerPool
) -> None:
    stack = dataclasses.replace(redis_stack, message_key="s3cret-key")
    [message] = queue_tis(db, "worker_probe", ["ok"]).values()
    [worker] = workers.start(stack, 1)
    good = message.kwargs()
    send_raw(stack, kwargs=good)  # unsigned
    send_raw(stack, kwargs=sign(good, "another key"))  # forged
    send_raw(stack, kwargs={**sign(good, "s3cret-key"), "try_number": 2})  # altered after
    refused = "unsigned or forged message"
    wait_for(workers, lambda: worker.count(refused) == 3, "3 refusals")
    assert row_of(db, message.ti_id)["state"] == "queued"  # no claim was even tried
    assert stack.ledger.entries() == []

    dispatcher = Dispatcher(make_app(stack.settings()), key=stack.settings().message_key)
    try:
        dispatcher.publish([(message, "default")])  # what a coordinator with the key sends
    finally:
        dispatcher.close()
    wait_state(db, workers, message, TIState.SUCCESS)
    assert len(ran(stack, "ok")) == 1
    assert "s3cret-key" not in worker.output()  # the key is never logged
    assert "s3cret-key" not in repr(stack.settings())


def test_a_dag_fingerprint_mismatch_fails_the_try(
    redis_stack: Stack, db: Engine, workers: WorkerPool
) -> None:
    planned = "0123456789abcdef"
    [message] = queue_tis(db, "worker_probe", ["ok"], fingerprint=planned).values()
    workers.start(redis_stack, 1)
    publish(redis_stack, message)
    row = wait_state(db, workers, message, TIState.FAILED)
    actual = BAG.get("worker_probe").fingerprint
    assert row["last_error"].startswith("DagFingerprintMismatch: ")
    assert actual in row["last_error"]
    assert planned in row["last_error"]
    assert redis_stack.ledger.entries() == []  # the callable never ran


# -- workers.execute in this process (no broker, no database) ---------------------------

CTX = Context(
    dag_id="d",
    task_id="t",
    run_id="r",
    logical_date=LOGICAL_DATE,
    ds="2024-03-31",
    ts=LOGICAL_DATE.isoformat(),
    prev_ds="2024-03-30",
    next_ds="2024-03-31",
    data_interval_start=LOGICAL_DATE,
    data_interval_end=LOGICAL_DATE,
    try_number=1,
)


def _run(fn: Callable[[Context], object], **options: Any) -> Result:
    defaults: dict[str, Any] = {"timeout": None, "beat": lambda: True, "interval": 0.05}
    return execute(fn, CTX, **{**defaults, "heartbeat_timeout": 1.0, **options})


def _raise(exc: BaseException) -> Callable[[Context], object]:
    def fn(_ctx: Context) -> object:
        raise exc

    return fn


def test_execute_reports_how_the_callable_ended() -> None:
    assert _run(lambda ctx: None).ending is Ending.RETURNED
    assert _run(_raise(Skip())).ending is Ending.SKIPPED
    rescheduled = _run(_raise(Reschedule(timedelta(seconds=5))))
    assert (rescheduled.ending, rescheduled.reschedule_in) == (Ending.RESCHEDULED, 5.0)
    raised = _run(_raise(ValueError("two\n  lines")))
    assert (raised.ending, raised.error) == (Ending.RAISED, "ValueError: two lines")
    assert isinstance(raised.exception, ValueError)
    with pytest.raises(SystemExit):  # the process is exiting: no outcome to write
        _run(_raise(SystemExit(3)))


# Our SIGALRM timer would cancel pytest-timeout's own: it must use a thread here.
@pytest.mark.timeout(120, method="thread")
def test_a_timeout_stops_the_callable_and_restores_the_signal_handler() -> None:
    def previous(_signum: int, _frame: object) -> None:
        raise AssertionError("the previous handler must not see our alarm")

    old = signal.signal(signal.SIGALRM, previous)
    try:
        started = time.monotonic()
        result = _run(lambda ctx: time.sleep(30), timeout=0.2)
        assert time.monotonic() - started < 10
        assert signal.getsignal(signal.SIGALRM) is previous
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    finally:
        signal.signal(signal.SIGALRM, old)
    assert result.ending is Ending.TIMED_OUT
    assert result.error == (
        "ExecutionTimeout: the task ran longer than its execution_timeout of 0.2s and was stopped"
    )


@pytest.mark.timeout(120, method="thread")
def test_a_lost_claim_stops_the_callable() -> None:
    beats: list[int] = []

    def beat() -> bool:
        beats.append(1)
        return len(beats) < 3  # the third heartbeat matches no row

    steps: list[str] = []

    def fn(_ctx: Context) -> None:
        steps.append("start")
        time.sleep(30)
        steps.append("after")

    result = _run(fn, beat=beat)
    assert (result.ending, steps, len(beats)) == (Ending.CLAIM_LOST, ["start"], 3)
    assert result.error is not None
    assert result.error.startswith("ClaimLost: the heartbeat matched no row")


@pytest.mark.timeout(120, method="thread")
def test_the_heartbeat_keeps_beating_through_an_outage_and_says_so_loudly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outage = threading.Event()
    outage.set()
    beats: list[bool] = []

    def beat() -> bool:
        beats.append(outage.is_set())
        if outage.is_set():
            raise ConnectionError("database unreachable")
        return True

    def fn(_ctx: Context) -> None:
        # Silent for well past the heartbeat timeout: the callable is not stopped.
        deadline = time.monotonic() + 60
        while beats.count(True) < 30 and time.monotonic() < deadline:
            time.sleep(0.01)
        outage.clear()
        while beats[-1] and time.monotonic() < deadline:
            time.sleep(0.01)

    caplog.set_level(logging.WARNING, logger="workers.execute")
    result = _run(fn, beat=beat, interval=0.02, heartbeat_timeout=0.3, label="d/t try 1")
    assert result.ending is Ending.RETURNED
    assert beats.count(True) >= 30
    assert beats[-1] is False
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1, caplog.text  # loudly, once
    assert "d/t try 1: no heartbeat written for" in errors[0].getMessage()
    assert "heartbeat written again" in caplog.text


@pytest.mark.timeout(120, method="thread")
def test_a_claim_reaped_during_an_outage_stops_the_callable_when_the_heartbeat_returns() -> None:
    beats: list[int] = []

    def beat() -> bool:
        beats.append(1)
        if len(beats) < 5:
            raise ConnectionError("database unreachable")
        return False  # back, and the try was reaped meanwhile

    result = _run(lambda ctx: time.sleep(30), beat=beat, heartbeat_timeout=0.1)
    assert (result.ending, len(beats)) == (Ending.CLAIM_LOST, 5)
    assert result.error is not None
    assert result.error.startswith("ClaimLost: the heartbeat matched no row")


@pytest.mark.timeout(120, method="thread")
def test_tries_running_at_once_in_one_process_each_beat_until_they_end() -> None:
    # A threads pool: one pacemaker thread beats for both tries, each at its interval.
    beats: dict[str, int] = {"fast": 0, "slow": 0}
    barrier = threading.Barrier(2)

    def counting(name: str) -> Callable[[], bool]:
        def beat() -> bool:
            beats[name] += 1
            return True

        return beat

    def fast(_ctx: Context) -> None:
        barrier.wait()
        deadline = time.monotonic() + 60
        while beats["fast"] < 10 and time.monotonic() < deadline:
            time.sleep(0.01)

    def slow(_ctx: Context) -> None:
        barrier.wait()
        deadline = time.monotonic() + 60
        while beats["slow"] < 3 and time.monotonic() < deadline:
            time.sleep(0.01)

    runs = [
        threading.Thread(
            target=_run, args=(fast,), kwargs={"beat": counting("fast"), "interval": 0.01}
        ),
        threading.Thread(
            target=_run, args=(slow,), kwargs={"beat": counting("slow"), "interval": 0.2}
        ),
    ]
    for thread in runs:
        thread.start()
    for thread in runs:
        thread.join(timeout=60)
    assert beats["fast"] >= 10
    assert 3 <= beats["slow"] < beats["fast"]
    ended = dict(beats)
    time.sleep(0.5)  # 50 fast intervals: an ended try is not beaten for (one may be in flight)
    assert beats["fast"] - ended["fast"] <= 1
    assert beats["slow"] - ended["slow"] <= 1


@pytest.mark.timeout(120, method="thread")
def test_a_callable_that_swallows_the_stop_is_still_reported_stopped() -> None:
    def stubborn(_ctx: Context) -> None:
        with contextlib.suppress(BaseException):  # swallows Interrupted too: the point
            time.sleep(30)
        steps.append("returned")

    steps: list[str] = []
    assert _run(stubborn, timeout=0.2).ending is Ending.TIMED_OUT
    assert steps == ["returned"]


def test_off_the_main_thread_the_callable_cannot_be_interrupted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    steps: list[str] = []

    def fn(_ctx: Context) -> None:
        time.sleep(0.5)
        steps.append("after")

    results: list[Result] = []
    thread = threading.Thread(target=lambda: results.append(_run(fn, timeout=0.1)))
    thread.start()
    thread.join(timeout=60)
    # It ran to its end; the timeout is still reported, detected afterwards.
    assert (steps, [r.ending for r in results]) == (["after"], [Ending.TIMED_OUT])
    assert "cannot be interrupted" in caplog.text
