"""Lost replies: a write commits, then the connection drops before its answer arrives.

A retry on a fresh connection must recognise what already landed
(`store.reconnect`). The fault is injected by a proxy in front of the
test's PostgreSQL database (`pgproxy.PgProxy.lose_reply`): the statement
reaches the server and commits, and its reply is thrown away with the
connection.

- the worker's claim, retried, recognises its own token: won, not lost;
- the worker's finish, retried, finds its own journal row: written, not lost;
- the same two end to end, in a real worker whose every connection goes
  through the proxy;
- a coordinator pass whose COMMIT reply is lost publishes nothing for it: the
  retried pass decides again, and the TIs the unknown commit queued are sent
  as lost messages after the queued timeout, each try running once.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime

import pendulum
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from support.processes import Coordinators, WorkerPool
from support.rows import journal
from support.stack import DAGS, Stack

from backfill.config import Settings
from backfill.engine.coordinator import Coordinator
from backfill.engine.dispatch import Dispatcher
from backfill.messages import TaskMessage
from backfill.model.discovery import load_dags
from backfill.model.states import TIState
from backfill.store import claims
from backfill.store.db import create_engine_for
from backfill.store.reconnect import Reconnect
from backfill.store.schema import ti_transitions
from workers.app import make_app

from .checks import (
    assert_all_succeeded_first_try,
    assert_each_try_started_once,
    claims_per_ti,
    create_backfill,
    task_instances_of,
)
from .pgproxy import Armed, PgProxy

DAY = "2016-01-01"
CLAIM = "WITH claimed AS \n(UPDATE task_instances"  # the claim statement, on PostgreSQL
FINISH = "UPDATE task_instances SET state='success'"  # a finish (a claim sets 'running')
MOVE = ("from_state", "to_state")  # of a journal row
FAULT_TIMEOUT = 30.0
DRIVE_TIMEOUT = 120.0


@pytest.fixture
def proxied(pg_url: str, proxy: PgProxy) -> Iterator[Engine]:
    """An autocommit engine, as a worker's, on `pg_url` through the proxy."""
    engine = create_engine_for(proxy.url(pg_url), autocommit=True)
    yield engine
    engine.dispose()


class Recorder:
    """A publisher that keeps every message it is asked to send, with the time."""

    def __init__(self) -> None:
        self.sent: list[tuple[datetime, TaskMessage]] = []

    def publish(self, messages: Sequence[tuple[TaskMessage, str]]) -> None:
        now = pendulum.now("UTC")
        self.sent.extend((now, message) for message, _queue in messages)


class RecordingDispatcher(Dispatcher):
    """The real publisher, keeping what it sends in `recorder` first."""

    def __init__(self, settings: Settings, recorder: Recorder) -> None:
        super().__init__(make_app(settings))
        self.recorder = recorder

    def publish(self, messages: Sequence[tuple[TaskMessage, str]]) -> None:
        self.recorder.publish(messages)
        super().publish(messages)


def queued_try(db_url: str, engine: Engine) -> TaskMessage:
    """Create a backfill of `fault_fanout` and let a coordinator queue its first tries."""
    settings = Settings.from_env({"BACKFILL_DATABASE_URL": db_url})
    dag = load_dags(DAGS).get("fault_fanout")
    backfill_id = create_backfill(engine, dag, DAY, DAY)
    recorder = Recorder()
    coordinator = Coordinator(engine, settings, dag, publisher=recorder)
    for _ in range(3):  # the first pass starts the run, the next queues its roots
        coordinator.run_pass(backfill_id)
        if recorder.sent:
            return recorder.sent[0][1]
    pytest.fail("no try was queued")


def ti_id_of(armed: Armed) -> int:
    """The TI named by the statement whose reply was lost."""
    assert armed.query is not None
    found = re.search(r"task_instances\.id = (\d+)", armed.query)
    assert found, armed.query
    return int(found.group(1))


def claim_on(engine: Engine, message: TaskMessage, token: str) -> claims.Claim | None:
    """The worker's claim of `message`'s try, on `engine` (autocommit)."""
    with engine.connect() as conn:
        return claims.claim(
            conn,
            ti_id=message.ti_id,
            try_number=message.try_number,
            token=token,
            claimant="host:1",
            hostname="host",
            now=pendulum.now("UTC"),
        )


def test_a_claim_whose_reply_was_lost_is_recognised_by_its_token(
    pg_url: str, pg_engine: Engine, proxy: PgProxy, proxied: Engine
) -> None:
    message = queued_try(pg_url, pg_engine)
    token = uuid.uuid4().hex
    armed = proxy.lose_reply(CLAIM)
    won = Reconnect(budget=FAULT_TIMEOUT).run(lambda: claim_on(proxied, message, token))
    assert armed.wait(FAULT_TIMEOUT), "the claim's reply was never lost"
    assert won is not None, "the retried claim took its own landed claim for a lost race"
    assert (won.ti_id, won.token) == (message.ti_id, token)
    assert journal(pg_engine, message.ti_id, *MOVE) == [
        ("none", "queued"),
        ("queued", "running"),
    ]
    assert claim_on(pg_engine, message, uuid.uuid4().hex) is None  # another claimant still loses


def test_a_finish_whose_reply_was_lost_is_recognised_by_its_journal_row(
    pg_url: str, pg_engine: Engine, proxy: PgProxy, proxied: Engine
) -> None:
    message = queued_try(pg_url, pg_engine)
    claim = claim_on(proxied, message, uuid.uuid4().hex)
    assert claim is not None

    def finish(at: datetime) -> Callable[[], bool]:
        def attempt() -> bool:
            with proxied.connect() as conn:
                return claims.finish(conn, claim, TIState.SUCCESS, actor="worker:host:1", now=at)

        return attempt

    armed = proxy.lose_reply(FINISH)
    written = Reconnect(budget=FAULT_TIMEOUT).run(finish(pendulum.now("UTC")))
    assert armed.wait(FAULT_TIMEOUT), "the finish's reply was never lost"
    assert written, "the retried finish took its own landed write for a lost claim"
    assert journal(pg_engine, message.ti_id, *MOVE)[1:] == [
        ("queued", "running"),
        ("running", "success"),
    ]
    # The journal row is this call's own: another finish of the try still misses.
    assert not Reconnect(budget=FAULT_TIMEOUT).run(finish(pendulum.now("UTC")))


def test_a_worker_survives_lost_claim_and_finish_replies(
    pg_stack: Stack,
    proxy: PgProxy,
    engine_of: Callable[[Stack], Engine],
    workers: WorkerPool,
    coordinators: Coordinators,
) -> None:
    engine = engine_of(pg_stack)
    armed = proxy.lose_reply(CLAIM)
    worker = workers.start(pg_stack.with_database(proxy.url(pg_stack.db_url)), 1)[0]
    dag = pg_stack.dag("outage_bash")
    backfill_id = create_backfill(engine, dag, DAY, DAY)
    driver = coordinators.thread(pg_stack, dag, backfill_id)
    assert armed.wait(FAULT_TIMEOUT), "no claim's reply was lost"
    claimed = ti_id_of(armed)
    armed = proxy.lose_reply(FINISH)
    assert armed.wait(FAULT_TIMEOUT), "no finish's reply was lost"
    finished = ti_id_of(armed)

    assert driver.result(DRIVE_TIMEOUT).state == "success"
    tis = task_instances_of(engine, backfill_id)
    assert_all_succeeded_first_try(tis)
    assert_each_try_started_once(pg_stack.ledger, {ti.key for ti in tis})
    assert set(claims_per_ti(engine, backfill_id).values()) == {1}
    log = worker.output()
    key = {ti.id: f"{ti.dag_id}/{ti.task_id}/{ti.logical_date.isoformat()} try 1" for ti in tis}
    assert f"{key[claimed]}: claimed by" in log, log
    assert f"{key[finished]}: success" in log, log
    assert "lost the claim race" not in log, log
    assert "discarded" not in log, log


def test_a_pass_whose_commit_reply_was_lost_publishes_nothing_unconfirmed(
    pg_stack: Stack,
    proxy: PgProxy,
    engine_of: Callable[[Stack], Engine],
    workers: WorkerPool,
    coordinators: Coordinators,
) -> None:
    stack = pg_stack.with_timeouts(queued_timeout=3.0)
    workers.start(stack, 2)
    engine = engine_of(stack)
    dag = stack.dag("fault_fanout")
    backfill_id = create_backfill(engine, dag, DAY, DAY)
    recorder = Recorder()
    publisher = RecordingDispatcher(stack.settings(), recorder)  # closed by the coordinator
    armed = proxy.lose_reply("COMMIT", after="SET state='queued'")
    driver = coordinators.thread(
        stack.with_database(proxy.url(stack.db_url)), dag, backfill_id, publisher=publisher
    )
    assert armed.wait(FAULT_TIMEOUT), "no queueing pass's COMMIT reply was lost"
    assert driver.result(DRIVE_TIMEOUT).state == "success"

    tis = task_instances_of(engine, backfill_id)
    assert_all_succeeded_first_try(tis)
    assert_each_try_started_once(stack.ledger, {ti.key for ti in tis})
    queued_at = _first_queued(engine)
    roots = {ti.id for ti in tis if ti.task_id in ("left", "right")}
    assert {ti_id for ti_id, _ in queued_at.items() if ti_id in roots} == roots
    first_sent = {}
    for at, message in recorder.sent:
        first_sent.setdefault(message.ti_id, at)
    for ti_id in roots:  # queued by the unconfirmed commit: sent only as lost messages
        waited = (first_sent[ti_id] - queued_at[ti_id]).total_seconds()
        assert waited >= stack.queued_timeout, (ti_id, waited)


def _first_queued(engine: Engine) -> dict[int, datetime]:
    journal = ti_transitions
    stmt = sa.select(journal.c.task_instance_id, sa.func.min(journal.c.at)).where(
        journal.c.to_state == "queued"
    )
    with engine.connect() as conn:
        rows = conn.execute(stmt.group_by(journal.c.task_instance_id))
        return {int(ti_id): at for ti_id, at in rows}
