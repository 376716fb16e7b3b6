"""RabbitMQ's own hazards, on a private node: `consumer_timeout`, and a crash mid-run.

RabbitMQ closes the channel of a consumer that holds an unacked message
longer than `consumer_timeout` (30 min by default) and delivers the message
again. With acks_late a worker holds its message for the whole try, so a try
longer than the timeout is delivered twice while it runs. The claim makes the
second delivery a no-op: the try's callable starts once, and its outcome,
written to the database fenced on the first worker's claim, is the TI's. The
worker whose channel was closed reconnects and lives on
(`backfill.broker.rabbitmq`; Celery alone stops it as "Unrecoverable").

The node is a private one (`rabbit_node.RabbitNode`): the shared RabbitMQ is
never reconfigured. It times consumers out after 5 s and checks every 0.5 s
(its channel tick, 60 s by default, is when the timeout is looked at).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from support.ledger import Key
from support.processes import Coordinators, WorkerPool
from support.stack import Stack, utc
from support.waiting import wait_until

from .checks import assert_each_try_started_once, create_backfill, task_instances_of, the_ti
from .rabbit_node import RabbitNode
from .servers import started
from .test_outages import (
    DRIVE_TIMEOUT,
    assert_finished_unharmed,
    assert_said_once,
    start_driver,
    wait_under_way,
)
from .test_outages import TIMEOUTS as OUTAGE_TIMEOUTS

pytestmark = pytest.mark.rabbitmq  # `-m 'not rabbitmq'` deselects them

CONSUMER_TIMEOUT_MS = 5000
TICK = "[{rabbit, [{channel_tick_interval, 500}]}]."
TIMED_OUT = "timed out waiting for delivery acknowledgement"  # the node's log line
DAY = "2016-01-01"
LONG_TRY_1: Key = ("rabbit_long", "long", utc(DAY), 1)


@pytest.fixture
def short_timeout_node() -> Iterator[RabbitNode]:
    """A private RabbitMQ node whose consumer_timeout is 5 s, destroyed after the test."""
    yield from started(
        lambda: RabbitNode({"consumer_timeout": str(CONSUMER_TIMEOUT_MS)}, TICK), "RabbitMQ"
    )


@pytest.fixture
def node_stack(pg_url: str, short_timeout_node: RabbitNode, tmp_path: Path) -> Stack:
    """A Stack on a fresh PostgreSQL database and the private node's default vhost."""
    return Stack.create(pg_url, None, tmp_path).with_broker(short_timeout_node.url())


def test_a_try_longer_than_consumer_timeout_runs_once_and_succeeds(
    node_stack: Stack,
    short_timeout_node: RabbitNode,
    engine_of: Callable[[Stack], Engine],
    workers: WorkerPool,
    coordinators: Coordinators,
) -> None:
    stack = node_stack
    engine = engine_of(stack)
    pool = workers.start(stack, 2)
    dag = stack.dag("rabbit_long")
    backfill_id = create_backfill(engine, dag, DAY, DAY)
    driver = coordinators.thread(stack, dag, backfill_id)
    started = wait_until(
        lambda: stack.ledger.first("start", LONG_TRY_1), timeout=30, what="long's try 1 to start"
    )
    holder = workers.owner_of(started.pid)
    # The try is held on its gate past the timeout: RabbitMQ closes the holder's
    # channel and delivers its message again, to a worker that loses the claim race.
    wait_until(
        lambda: TIMED_OUT in short_timeout_node.server_log(),
        timeout=60,
        what="RabbitMQ to time out the consumer holding long's message",
        explain=short_timeout_node.server_log,
    )
    wait_until(
        lambda: sum(w.count("lost the claim race") for w in pool) >= 1,
        timeout=60,
        what="the message delivered again to lose the claim race",
        explain=workers.logs_tail,
    )
    assert the_ti(engine, backfill_id, "long").state == "running"
    # The holder rode the closed channel out as a connection loss: it connected again.
    wait_until(
        lambda: holder.count("Connected to ") >= 2,
        timeout=60,
        what="the worker whose channel was closed to connect again",
        explain=holder.output,
    )
    stack.open_gate(LONG_TRY_1)

    outcome = driver.result(90)
    assert outcome.state == "success", outcome
    long = the_ti(engine, backfill_id, "long")
    assert (long.state, long.try_number) == ("success", 1), long
    tis = task_instances_of(engine, backfill_id)
    assert_each_try_started_once(stack.ledger, {ti.key for ti in tis})
    # No worker stopped for it (Celery's "Unrecoverable error" ends a worker).
    assert all(w.process.poll() is None for w in pool)
    assert not [w.name for w in pool if "Unrecoverable error" in w.output()]
    # The callable ran once, to its end, and its outcome is the TI's.
    assert [e.event for e in stack.ledger.entries() if e.key == LONG_TRY_1] == ["start", "end"]


def test_rabbitmq_crashed_and_restarted_mid_run_loses_nothing(
    node_stack: Stack,
    short_timeout_node: RabbitNode,
    engine_of: Callable[[Stack], Engine],
    workers: WorkerPool,
    coordinators: Coordinators,
) -> None:
    stack = node_stack.with_timeouts(**OUTAGE_TIMEOUTS)
    workers.start(stack, 2, concurrency=4)
    engine = engine_of(stack)
    process, backfill_id = start_driver("run", stack, engine, coordinators)
    wait_under_way(engine, backfill_id, process)
    # SIGKILLed: unacked and unpersisted messages are lost, publishing fails while it
    # is down, and the workers' connections break. The node's state survives.
    short_timeout_node.restart_after(3.0)

    assert process.wait(timeout=DRIVE_TIMEOUT) == 0, process.output()
    assert_said_once(process, "broker unreachable since", "broker reachable again after")
    assert_finished_unharmed(stack, engine, backfill_id)
