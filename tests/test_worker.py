"""The worker task end to end: real `celery -A workers worker` processes, real brokers.

Each test puts TIs in `queued` itself, publishes their messages with
`make_app(...).send_task` (no coordinator involved) and polls the database
until the worker has written its outcome. Workers consume a queue of their
own on Redis (127.0.0.1:6379, shared: nothing else is touched) or the
embedded `filesystem://` broker, and are always killed in teardown. Every
callable appends to a ledger file (tests/dags_worker/probe.py), which counts
executions.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pendulum
import pytest
import redis
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from support.private_redis import private_redis
from support.waiting import wait_until

from backfill.config import Settings
from backfill.messages import TASK_NAME, TaskMessage
from backfill.model.context import Context, Reschedule, Skip
from backfill.model.discovery import load_dags
from backfill.model.states import TIState
from backfill.planning.run_options import Execution, RunOptions
from backfill.planning.snapshot import TIRow
from backfill.store import runs, tis
from backfill.store.db import create_engine_for
from backfill.store.schema import task_instances, ti_transitions
from workers.app import make_app
from workers.execute import Ending, Result, execute

ROOT = Path(__file__).resolve().parent.parent
DAGS = Path(__file__).resolve().parent / "dags_worker"
BAG = load_dags(DAGS)
LOGICAL_DATE = pendulum.datetime(2024, 3, 31, 22, tz="UTC")  # 2024-04-01 in Paris
DEADLINE = 60.0  # seconds to wait for any condition: generous, never a fixed sleep
COORDINATOR = "coordinator:test"
T = TypeVar("T")


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A Redis DB index of this module's own (not a fixed one), emptied after."""
    with private_redis("tests/test_worker.py") as private:
        yield private.url


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def count(self, needle: str) -> int:
        return self.text().count(needle)


@dataclass
class Rig:
    """One database, one broker, one private queue, one ledger, and the workers on them."""

    db_url: str
    broker_url: str
    home: Path
    queue: str
    ledger: Path
    engine: Engine
    env: dict[str, str] = field(default_factory=dict)
    workers: list[Worker] = field(default_factory=list)

    def settings(self) -> Settings:
        return Settings.from_env(self.env)

    def start_worker(self, *, concurrency: int = 1) -> Worker:
        log = self.home / f"worker-{len(self.workers)}.log"
        command = [
            sys.executable, "-m", "celery", "-A", "workers", "worker",
            "-P", "prefork", "-c", str(concurrency), "-Q", self.queue,
            "-n", f"test-{uuid.uuid4().hex[:8]}@%h",
            "--without-mingle", "--without-gossip", "-l", "INFO",
        ]  # fmt: skip
        with log.open("wb") as out:
            proc = subprocess.Popen(
                command,
                cwd=ROOT,
                env={**os.environ, **self.env, "PYTHONUNBUFFERED": "1"},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: teardown kills it all
            )
        worker = Worker(proc=proc, log=log)
        self.workers.append(worker)
        return worker

    def publish(self, message: TaskMessage, *, times: int = 1, **options: Any) -> None:
        app = make_app(self.settings())
        try:
            for _ in range(times):
                app.send_task(
                    TASK_NAME,
                    kwargs=message.kwargs(),
                    argsrepr=message.describe(),
                    queue=self.queue,
                    **options,
                )
        finally:
            app.close()

    def send_raw(self, *, args: Any = (), kwargs: Any = None, **options: Any) -> None:
        app = make_app(self.settings())
        try:
            app.send_task(TASK_NAME, args=args, kwargs=kwargs, queue=self.queue, **options)
        finally:
            app.close()

    def wait_for(
        self, condition: Callable[[], T | None], what: str, timeout: float = DEADLINE
    ) -> T:
        def logs() -> str:
            return "\n".join(w.text()[-4000:] for w in self.workers)

        return wait_until(condition, timeout=timeout, what=what, explain=logs)

    def ledger_lines(self) -> list[str]:
        return self.ledger.read_text().splitlines() if self.ledger.exists() else []


def _stop(worker: Worker) -> None:
    """Warm shutdown (the worker leaves its broker bindings tidy), then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(worker.proc.pid, signal.SIGCONT)  # in case a test left it paused
        worker.proc.send_signal(signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        worker.proc.wait(timeout=15)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(worker.proc.pid, signal.SIGKILL)  # the pool children too
    worker.proc.wait(timeout=15)


@pytest.fixture
def make_rig(tmp_path: Path) -> Iterator[Callable[[str, str], Rig]]:
    rigs: list[Rig] = []

    def make(db_url: str, broker_url: str) -> Rig:
        home = tmp_path / f"home{len(rigs)}"
        home.mkdir()
        rig = Rig(
            db_url=db_url,
            broker_url=broker_url,
            home=home,
            queue=f"test-worker-{uuid.uuid4().hex[:12]}",
            ledger=home / "ledger.txt",
            engine=create_engine_for(db_url),
            env={
                "BACKFILL_HOME": str(home),
                "BACKFILL_DATABASE_URL": db_url,
                "BACKFILL_BROKER_URL": broker_url,
                "BACKFILL_DAGS_FOLDER": str(DAGS),
                "BACKFILL_HEARTBEAT_INTERVAL": "0.2",
                "BACKFILL_HEARTBEAT_TIMEOUT": "2",
            },
        )
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        for worker in rig.workers:
            _stop(worker)
        rig.engine.dispose()
        if rig.broker_url.startswith("redis://"):
            client = redis.Redis.from_url(rig.broker_url)
            q = rig.queue  # the queue and its exchange's binding tables (kombu's key names)
            client.delete(q, f"_kombu.binding.{q}", f"_kombu.binding_permanent.{q}")
            client.close()


@pytest.fixture
def redis_rig(make_rig: Callable[[str, str], Rig], pg_url: str, redis_url: str) -> Rig:
    return make_rig(pg_url, redis_url)


# -- putting TIs in `queued`, reading them back --------------------------------------


def queue_tis(
    rig: Rig,
    dag_id: str,
    task_ids: list[str],
    *,
    logical_date: pendulum.DateTime = LOGICAL_DATE,
    fingerprint: str | None = None,
    options: RunOptions | None = None,
) -> dict[str, TaskMessage]:
    """A backfill of one run of `task_ids`, each TI queued for try 1; their messages."""
    dag = BAG.get(dag_id)
    now = pendulum.now("UTC")
    specs = [
        runs.TaskSpec(
            task_id=tid,
            pool="default_pool",
            pool_slots=1,
            queue=rig.queue,
            priority_weight=1,
            max_tries=dag.tasks[tid].options.retries,
        )
        for tid in task_ids
    ]
    with rig.engine.begin() as conn:
        bf = runs.insert_backfill(
            conn,
            dag_id=dag_id,
            fingerprint=fingerprint or dag.fingerprint,
            start=logical_date,
            end=logical_date,
            options={} if options is None else options.as_json(),
            conf={},
            now=now,
        )
        new_run = runs.NewRun(
            run_id=f"backfill__{logical_date.isoformat()}",
            logical_date=logical_date,
            data_interval_start=logical_date,
            data_interval_end=logical_date + timedelta(days=1),
        )
        conf = {"ledger": str(rig.ledger)}
        [run_pk] = runs.insert_runs(
            conn, backfill_id=bf, dag_id=dag_id, runs=[new_run], tasks=specs, conf=conf, now=now
        )
        ids = dict(
            conn.execute(
                sa.select(task_instances.c.task_id, task_instances.c.id).where(
                    task_instances.c.dag_run_id == run_pk
                )
            ).all()
        )
        # As a coordinator does: TIs are queued in a running run.
        runs.start_runs(conn, bf, 1, dag_id=dag_id, limit=1_000, backwards=False, now=now)
        rows = [_new_ti(ids[tid], run_pk, tid) for tid in task_ids]
        queued = tis.queue(conn, rows, actor=COORDINATOR, now=now)
    assert {q.id for q in queued} == set(ids.values())
    return {
        tid: TaskMessage(
            ti_id=ids[tid],
            try_number=1,
            backfill_id=bf,
            dag_id=dag_id,
            task_id=tid,
            logical_date=logical_date.isoformat(),
        )
        for tid in task_ids
    }


def _new_ti(ti_id: int, run_pk: int, task_id: str) -> TIRow:
    return TIRow(
        id=ti_id,
        dag_run_id=run_pk,
        task_id=task_id,
        state=TIState.NONE,
        try_number=0,
        max_tries=0,
        pool="default_pool",
        pool_slots=1,
        priority_weight=1,
    )


def ti_row(rig: Rig, ti_id: int) -> dict[str, Any]:
    with rig.engine.connect() as conn:
        row = conn.execute(sa.select(task_instances).where(task_instances.c.id == ti_id)).one()
    return dict(row._mapping)


def journal(rig: Rig, ti_id: int) -> list[tuple[str, str, str]]:
    j = ti_transitions
    with rig.engine.connect() as conn:
        rows = conn.execute(
            sa.select(j.c.from_state, j.c.to_state, j.c.actor)
            .where(j.c.task_instance_id == ti_id)
            .order_by(j.c.id)
        ).all()
    return [(r.from_state, r.to_state, r.actor) for r in rows]


def wait_state(rig: Rig, message: TaskMessage, *states: TIState) -> dict[str, Any]:
    wanted = {s.value for s in states}

    def reached() -> dict[str, Any] | None:
        row = ti_row(rig, message.ti_id)
        return row if row["state"] in wanted else None

    return rig.wait_for(reached, f"{message.describe()} to be {'/'.join(sorted(wanted))}")


def ran(rig: Rig, task_id: str, event: str = "ran") -> list[str]:
    return [line for line in rig.ledger_lines() if line.split()[:2] == [task_id, event]]


# -- outcomes -------------------------------------------------------------------------


def test_every_outcome_is_recorded(
    make_rig: Callable[[str, str], Rig], db_url: str, backend: str, request: pytest.FixtureRequest
) -> None:
    # SQLite goes with the embedded filesystem:// broker, PostgreSQL with Redis.
    broker = "filesystem://" if backend == "sqlite" else request.getfixturevalue("redis_url")
    rig = make_rig(db_url, broker)
    probe = queue_tis(rig, "worker_probe", ["ok", "boom", "boom_final", "skipper", "sensor"])
    paris = queue_tis(rig, "worker_paris", ["local_day"])
    rig.start_worker()
    for message in [*probe.values(), *paris.values()]:
        rig.publish(message)

    ok = wait_state(rig, probe["ok"], TIState.SUCCESS)
    claimant = ok["claimant"]
    assert ok["last_error"] is None
    assert ok["end_date"] >= ok["start_date"]
    assert journal(rig, ok["id"]) == [
        ("none", "queued", COORDINATOR),
        ("queued", "running", f"worker:{claimant}"),
        ("running", "success", f"worker:{claimant}"),
    ]
    assert ran(rig, "ok") == [f"ok ran 2024-03-31 1 {claimant.rsplit(':', 1)[1]}"]

    boom = wait_state(rig, probe["boom"], TIState.UP_FOR_RETRY)  # retries=1: a try is left
    assert boom["last_error"] == "ValueError: boom on 2024-03-31 second line"
    assert boom["next_try_at"] - boom["end_date"] == pytest.approx(
        timedelta(seconds=30), abs=timedelta(seconds=1)
    )
    assert boom["try_number"] == 1

    final = wait_state(rig, probe["boom_final"], TIState.FAILED)  # retries=0
    assert (final["last_error"], final["next_try_at"]) == ("ValueError: boom for good", None)

    skipped = wait_state(rig, probe["skipper"], TIState.SKIPPED)
    assert skipped["last_error"] is None

    sensor = wait_state(rig, probe["sensor"], TIState.UP_FOR_RESCHEDULE)
    assert sensor["next_try_at"] - sensor["end_date"] == pytest.approx(
        timedelta(seconds=60), abs=timedelta(seconds=1)
    )
    assert sensor["try_number"] == 1

    wait_state(rig, paris["local_day"], TIState.SUCCESS)
    # The DAG's timezone decides ds: 22:00 UTC on March 31 is April 1 in Paris.
    [line] = ran(rig, "local_day")
    assert line.split()[2:] == ["2024-04-01", "1", "2024-03-31T22:00:00+00:00"]
    for task_id in ("boom", "boom_final", "skipper", "sensor"):
        assert len(ran(rig, task_id)) == 1, task_id


def test_mark_success_claims_and_finishes_without_calling_the_task(
    make_rig: Callable[[str, str], Rig], db_url: str, backend: str, request: pytest.FixtureRequest
) -> None:
    broker = "filesystem://" if backend == "sqlite" else request.getfixturevalue("redis_url")
    rig = make_rig(db_url, broker)
    marked = RunOptions(execution=Execution.MARK_SUCCESS)
    messages = queue_tis(rig, "worker_probe", ["ok", "boom_final", "hang"], options=marked)
    worker = rig.start_worker()
    for message in messages.values():
        rig.publish(message)

    for task_id, message in messages.items():
        row = wait_state(rig, message, TIState.SUCCESS)  # even the task that always raises
        claimant = row["claimant"]
        assert (row["try_number"], row["last_error"]) == (1, None), task_id
        assert journal(rig, row["id"]) == [
            ("none", "queued", COORDINATOR),
            ("queued", "running", f"worker:{claimant}"),  # claimed like any try
            ("running", "success", f"worker:{claimant}"),
        ]
    assert rig.ledger_lines() == []  # no callable ran: every task writes its ledger first
    rig.wait_for(
        lambda: worker.count("--mark-success: marked success without running the task") == 3,
        "the worker to log each TI it marked",
    )


def test_execution_timeout_stops_the_callable(redis_rig: Rig) -> None:
    rig = redis_rig
    [message] = queue_tis(rig, "worker_probe", ["slow"]).values()  # execution_timeout=1s
    rig.start_worker()
    rig.publish(message)
    row = wait_state(rig, message, TIState.FAILED)
    assert row["last_error"].startswith(
        "ExecutionTimeout: the task ran longer than its execution_timeout of 1s"
    )
    assert row["end_date"] - row["start_date"] < timedelta(seconds=20)  # it sleeps 60s
    events = [line.split()[1] for line in rig.ledger_lines()]
    assert events == ["start", "stopped:Interrupted"]  # never "after"


def test_a_message_delivered_three_times_runs_once(redis_rig: Rig) -> None:
    rig = redis_rig
    [message] = queue_tis(rig, "worker_probe", ["ok"]).values()
    worker = rig.start_worker(concurrency=3)  # three pool processes, one copy each
    rig.publish(message, times=3)
    row = wait_state(rig, message, TIState.SUCCESS)
    rig.wait_for(lambda: worker.count("lost the claim race") == 2, "two losers to ack")
    assert len(ran(rig, "ok")) == 1
    assert [t for t in journal(rig, row["id"]) if t[1] == "running"] == [
        ("queued", "running", f"worker:{row['claimant']}")
    ]


class _Tripwire:
    """Unpickling this creates a file: proof that a pickle payload was deserialized."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


def test_forged_and_pickled_messages_have_no_effect(redis_rig: Rig) -> None:
    rig = redis_rig
    [message] = queue_tis(rig, "worker_probe", ["ok"]).values()
    good = message.kwargs()
    worker = rig.start_worker()
    tripwire = rig.home / "unpickled"
    rig.send_raw(kwargs={"ti_id": message.ti_id})  # missing keys
    rig.send_raw(kwargs={**good, "extra": 1})
    rig.send_raw(kwargs={**good, "ti_id": str(message.ti_id)})  # wrong type
    rig.send_raw(args=[message.ti_id, 1])  # positional
    rig.send_raw(kwargs={**good, "ti_id": message.ti_id + 10_000})  # no such TI
    rig.send_raw(kwargs={**good, "try_number": 2})  # not the queued try
    rig.send_raw(kwargs={**good, "x": _Tripwire(tripwire)}, serializer="pickle")
    rig.wait_for(lambda: worker.count("malformed message acked as a no-op") == 4, "4 refusals")
    rig.wait_for(lambda: worker.count("lost the claim race") == 2, "2 stale messages acked")
    refusal = "Refusing to deserialize untrusted content of type pickle"
    rig.wait_for(lambda: refusal in worker.text(), "the pickle message to be refused")
    assert not tripwire.exists()
    assert ti_row(rig, message.ti_id)["state"] == "queued"
    assert rig.ledger_lines() == []

    rig.publish(message)  # the genuine one still runs: nothing above was left behind
    wait_state(rig, message, TIState.SUCCESS)
    assert len(ran(rig, "ok")) == 1
    client = redis.Redis.from_url(rig.broker_url)
    try:
        assert client.llen(rig.queue) == 0  # every message above was acked, none requeued
    finally:
        client.close()


def test_a_dag_fingerprint_mismatch_fails_the_try(redis_rig: Rig) -> None:
    rig = redis_rig
    planned = "0123456789abcdef"
    [message] = queue_tis(rig, "worker_probe", ["ok"], fingerprint=planned).values()
    rig.start_worker()
    rig.publish(message)
    row = wait_state(rig, message, TIState.FAILED)
    actual = BAG.get("worker_probe").fingerprint
    assert row["last_error"].startswith("DagFingerprintMismatch: ")
    assert actual in row["last_error"]
    assert planned in row["last_error"]
    assert rig.ledger_lines() == []  # the callable never ran


# -- fencing ---------------------------------------------------------------------------


def test_a_paused_worker_that_lost_its_claim_is_stopped_and_fenced(redis_rig: Rig) -> None:
    rig = redis_rig
    [message] = queue_tis(rig, "worker_probe", ["hang"]).values()  # retries=0, sleeps 60s
    worker = rig.start_worker()
    rig.publish(message)
    rig.wait_for(lambda: ran(rig, "hang", "start"), "the callable to start")
    running = ti_row(rig, message.ti_id)
    child = int(running["claimant"].rsplit(":", 1)[1])  # the pool process running the try

    os.kill(child, signal.SIGSTOP)
    try:
        # Silent past the heartbeat timeout (2s), the try is reaped as the coordinator would.
        rig.wait_for(lambda: _reap(rig, message), "the silent try to be reaped")
    finally:
        os.kill(child, signal.SIGCONT)
    reaped = ti_row(rig, message.ti_id)
    assert (reaped["state"], reaped["claim_token"]) == ("failed", None)

    rig.wait_for(lambda: ran(rig, "hang", "stopped:Interrupted"), "the callable to be stopped")
    rig.wait_for(lambda: "claim lost; outcome" in worker.text(), "the outcome to be discarded")
    assert not ran(rig, "hang", "after")
    assert ti_row(rig, message.ti_id) == reaped  # the late outcome was not written
    assert journal(rig, message.ti_id)[-1] == ("running", "failed", "coordinator:reaper")


def _reap(rig: Rig, message: TaskMessage) -> bool:
    now = pendulum.now("UTC")
    timeout = rig.settings().heartbeat_timeout
    with rig.engine.begin() as conn:
        reaped = tis.reap_stale(
            conn,
            backfill_id=message.backfill_id,
            cutoff=now - timedelta(seconds=timeout),
            retry_delays={},
            actor="coordinator:reaper",
            now=now,
        )
    return reaped == [message.ti_id]


# -- workers.execute in this process (no broker, no database) ---------------------------

CTX = Context(
    dag_id="d",
    task_id="t",
    run_id="r",
    logical_date=LOGICAL_DATE,
    ds="2024-03-31",
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
