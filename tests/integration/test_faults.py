"""Faults (DESIGN 5, guarantees 1-3) on PostgreSQL, Redis and real worker processes;
the killed worker and the lost messages on RabbitMQ too (`core_stack`).

- a worker SIGKILLed mid-task: its try is reaped after the heartbeat timeout
  and retried on another worker; nothing else runs twice;
- the coordinator (`backfill run`) SIGKILLed mid-backfill: `backfill resume`
  waits for its lease to lapse and finishes without re-running anything;
- messages deleted from the broker: re-dispatched after the queued timeout;
- a worker paused (SIGSTOP) past the heartbeat timeout, then resumed: its
  callable, still blocked, is stopped because its claim is lost, its late
  outcome is refused (row and journal unchanged); the TI's outcome is its
  retry's.

A gated task (`fault_gate.hold`, see tests/dags_integration) blocks its first
try until the test opens its gate, so a test knows which worker to hit and
when. "Ran" is counted from the execution ledger.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy.engine import Engine
from support.fixtures import PrivateBroker
from support.ledger import Entry, Key
from support.processes import Coordinators, CoordinatorThread, WorkerPool
from support.rows import journal, row_of
from support.stack import Stack, utc
from support.waiting import wait_until

from .checks import (
    assert_all_succeeded_first_try,
    assert_each_try_started_once,
    backfill_ids,
    backfill_row,
    create_backfill,
    task_instances_of,
    the_ti,
)

DAY = "2016-01-01"
HOLD_TRY_1: Key = ("fault_gate", "hold", utc(DAY), 1)
HOLD_TRY_2: Key = ("fault_gate", "hold", utc(DAY), 2)
DRIVE_TIMEOUT = 90.0
# Short, so that reaping takes seconds; the interval leaves a live worker 9
# chances to beat before a loaded CI machine could get it reaped.
HEARTBEATS = {"heartbeat_interval": 0.3, "heartbeat_timeout": 3.0}


# The tries of `fault_gate` over DAY when `hold` needed one retry.
FAULT_GATE_TRIES: set[Key] = {
    HOLD_TRY_1,
    HOLD_TRY_2,
    ("fault_gate", "after_hold", utc(DAY), 1),
    ("fault_gate", "bystander", utc(DAY), 1),
}


def assert_reaped_once_after_the_timeout(engine: Engine, ti_id: int, timeout: float) -> None:
    """Try 1 of the TI left `running` exactly once: reaped by a coordinator, not
    before the heartbeat timeout had passed since the worker claimed it."""
    rows = [r for r in journal(engine, ti_id) if r.try_number == 1]
    claimed = [r for r in rows if r.to_state == "running"]
    left = [r for r in rows if r.from_state == "running"]
    assert len(claimed) == 1, rows
    assert [(r.to_state, r.actor.startswith("coordinator:")) for r in left] == [
        ("up_for_retry", True)
    ], rows
    assert left[0].at - claimed[0].at >= timedelta(seconds=timeout), rows


def hold_running(
    stack: Stack, engine: Engine, workers: WorkerPool, coordinators: Coordinators
) -> tuple[int, CoordinatorThread, Entry]:
    """Two workers and a coordinator on a backfill of `fault_gate` over DAY, once
    `hold`'s try 1 runs (blocked on its gate): the backfill, its driver, the try's start."""
    workers.start(stack, 2)
    dag = stack.dag("fault_gate")
    backfill_id = create_backfill(engine, dag, DAY, DAY)
    driver = coordinators.thread(stack, dag, backfill_id)
    started = wait_until(
        lambda: stack.ledger.first("start", HOLD_TRY_1), timeout=30, what="hold's try 1 to start"
    )
    return backfill_id, driver, started


def test_a_killed_worker_try_is_reaped_and_retried_elsewhere(
    core_stack: Stack,
    engine_of: Callable[[Stack], Engine],
    workers: WorkerPool,
    coordinators: Coordinators,
) -> None:
    stack = core_stack.with_timeouts(**HEARTBEATS)
    engine = engine_of(stack)
    backfill_id, driver, started = hold_running(stack, engine, workers, coordinators)
    victim = workers.owner_of(started.pid)
    victim.signal(signal.SIGKILL)
    victim.process.wait(timeout=30)

    outcome = driver.result(DRIVE_TIMEOUT)
    assert outcome.state == "success", outcome
    hold = the_ti(engine, backfill_id, "hold")
    assert (hold.state, hold.try_number) == ("success", 2)
    retried = stack.ledger.first("start", HOLD_TRY_2)
    assert retried is not None
    assert not victim.owns(retried.pid)
    assert_reaped_once_after_the_timeout(engine, hold.id, stack.heartbeat_timeout)
    assert_each_try_started_once(stack.ledger, FAULT_GATE_TRIES)


def test_a_killed_coordinator_is_resumed_without_rerunning_anything(
    pg_stack: Stack,
    engine_of: Callable[[Stack], Engine],
    workers: WorkerPool,
    coordinators: Coordinators,
) -> None:
    # A short queued timeout too: a message the killed driver committed but
    # never published is re-sent by the resumed one within seconds.
    stack = pg_stack.with_timeouts(**HEARTBEATS, queued_timeout=5.0)
    workers.start(stack, 2)
    engine = engine_of(stack)
    dag = stack.dag("fault_chain")
    run = coordinators.cli(
        stack, "run", "fault_chain", "-s", DAY, "-e", "2016-01-04", "--local-workers", "0"
    )
    backfill_id = wait_until(
        lambda: backfill_ids(engine), timeout=60, what="`backfill run` to create the backfill"
    )[0]

    def some_done() -> bool:
        states = [ti.state for ti in task_instances_of(engine, backfill_id)]
        return states.count("success") >= 4

    wait_until(some_done, timeout=60, what="4 TIs to succeed", explain=run.output)
    run.process.send_signal(signal.SIGKILL)
    assert run.wait(timeout=30) == -signal.SIGKILL
    before = task_instances_of(engine, backfill_id)
    assert backfill_row(engine, backfill_id).state == "running"
    assert any(ti.state != "success" for ti in before), "the backfill ended before the kill"

    resume = coordinators.cli(stack, "resume", str(backfill_id))
    assert resume.wait(timeout=DRIVE_TIMEOUT) == 0, resume.output()
    assert "lease" in resume.output().lower()  # it said it waited for the dead driver's lease
    assert backfill_row(engine, backfill_id).state == "success"
    tis = task_instances_of(engine, backfill_id)
    assert len(tis) == 4 * len(dag.tasks)
    assert_all_succeeded_first_try(tis)
    assert_each_try_started_once(stack.ledger, {ti.key for ti in tis})


def test_messages_deleted_from_the_broker_are_dispatched_again(
    core_stack: Stack,
    any_broker: PrivateBroker,
    engine_of: Callable[[Stack], Engine],
    workers: WorkerPool,
    coordinators: Coordinators,
) -> None:
    stack = core_stack.with_timeouts(queued_timeout=2.0)
    engine = engine_of(stack)
    dag = stack.dag("fault_fanout")
    backfill_id = create_backfill(engine, dag, DAY, DAY)
    driver = coordinators.thread(stack, dag, backfill_id)
    # No worker yet: the two root tasks' messages wait in the queue. Lose them.
    wait_until(
        lambda: any_broker.queue_length("default") >= 2, timeout=30, what="2 messages queued"
    )
    any_broker.purge("default")
    assert any_broker.queue_length("default") == 0
    wait_until(
        lambda: any_broker.queue_length("default") >= 2,
        timeout=30,
        what="the coordinator to publish the lost messages again",
    )
    workers.start(stack, 2)

    outcome = driver.result(DRIVE_TIMEOUT)
    assert outcome.state == "success", outcome
    tis = task_instances_of(engine, backfill_id)
    assert_all_succeeded_first_try(tis)  # re-dispatched for the same try
    assert_each_try_started_once(stack.ledger, {ti.key for ti in tis})


def test_a_paused_worker_is_stopped_and_its_late_outcome_refused(
    pg_stack: Stack,
    engine_of: Callable[[Stack], Engine],
    workers: WorkerPool,
    coordinators: Coordinators,
) -> None:
    stack = pg_stack.with_timeouts(**HEARTBEATS)
    engine = engine_of(stack)
    backfill_id, driver, started = hold_running(stack, engine, workers, coordinators)
    paused = workers.owner_of(started.pid)
    paused.signal(signal.SIGSTOP)

    def retried() -> bool:
        hold = the_ti(engine, backfill_id, "hold")
        return (hold.state, hold.try_number) == ("success", 2)

    wait_until(retried, timeout=60, what="hold's try 1 to be reaped and try 2 to succeed")
    hold_id = the_ti(engine, backfill_id, "hold").id
    settled, settled_journal = row_of(engine, hold_id), journal(engine, hold_id)
    # Wake try 1 up with its gate still closed: its callable is still blocked,
    # and only the worker learning that its claim is lost can stop it.
    ended = paused.finished()
    paused.signal(signal.SIGCONT)
    wait_until(
        lambda: paused.finished() > ended,
        timeout=30,
        what="the resumed worker to end its late try",
        explain=paused.output,
    )
    assert "claim lost; outcome" in paused.output()  # fenced: its finish matched no row
    # Stopped, not run to its end: the callable saw `Interrupted` and never got past its gate.
    assert [e.event for e in stack.ledger.entries() if e.key == HOLD_TRY_1] == [
        "start",
        "stopped:Interrupted",
    ]
    # Its late outcome was not written: neither the row nor its journal moved.
    assert row_of(engine, hold_id) == settled
    assert journal(engine, hold_id) == settled_journal
    last_of_try_1 = [r for r in settled_journal if r.try_number == 1][-1]
    assert (last_of_try_1.from_state, last_of_try_1.to_state) == ("running", "up_for_retry")
    assert last_of_try_1.actor.startswith("coordinator:"), last_of_try_1  # the reaper

    outcome = driver.result(DRIVE_TIMEOUT)
    assert outcome.state == "success", outcome
    hold = the_ti(engine, backfill_id, "hold")
    assert (hold.state, hold.try_number) == ("success", 2), hold
    assert hold.last_error is None or "late outcome" not in hold.last_error, hold
    assert hold.claimant is not None
    assert not paused.owns(int(hold.claimant.rsplit(":", 1)[1]))
    # Try 1 left `running` once, reaped by the coordinator: its late outcome never landed.
    assert_reaped_once_after_the_timeout(engine, hold.id, stack.heartbeat_timeout)
    assert_each_try_started_once(stack.ledger, FAULT_GATE_TRIES)
