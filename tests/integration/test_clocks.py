"""A worker whose wall clock is off by hours, on PostgreSQL, Redis and real workers.

Heartbeats are compared with the coordinator's cutoff; both are on the
database's clock (`backfill.store.clock`), so no host's wall clock decides
who is dead:
- a worker two hours behind keeps its long try: not reaped, it succeeds on
  try 1 (on its own clock, its heartbeats were two hours stale);
- a worker two hours ahead, SIGKILLed mid-try, has that try reaped after the
  heartbeat timeout and retried elsewhere (on its own clock, its last
  heartbeat was two hours in the future).

The offset is `support.skew`'s, an LD_PRELOAD shim on the worker's wall clock.
The worker behind has its clock stepped back while its try runs; the one ahead
runs ahead from its start. (libfaketime fakes the monotonic clock too, and
Python's timed waits, the heartbeat's among them, then never return.)
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.engine import Engine
from support.ledger import Entry, Key
from support.processes import Coordinators, CoordinatorThread, WorkerPool
from support.rows import journal, row_of
from support.skew import Skew
from support.stack import Stack, utc
from support.waiting import wait_until

from .checks import assert_each_try_started_once, create_backfill, the_ti
from .test_faults import DRIVE_TIMEOUT, HEARTBEATS, assert_reaped_once_after_the_timeout

DAY = "2016-01-01"
HOLD_1: Key = ("clock_gate", "hold", utc(DAY), 1)
HOLD_2: Key = ("clock_gate", "hold", utc(DAY), 2)
TRIES = {HOLD_1, ("clock_gate", "after", utc(DAY), 1), ("clock_gate", "beside", utc(DAY), 1)}


TWO_HOURS = 2 * 3600.0


def hold_started(
    stack: Stack, engine: Engine, coordinators: Coordinators
) -> tuple[int, CoordinatorThread, Entry]:
    """A backfill of `clock_gate` over DAY and its driver, once `hold`'s try 1 runs
    (blocked on its gate): the backfill, the driver, the try's start."""
    dag = stack.dag("clock_gate")
    backfill_id = create_backfill(engine, dag, DAY, DAY)
    driver = coordinators.thread(stack, dag, backfill_id)
    started = wait_until(
        lambda: stack.ledger.first("start", HOLD_1), timeout=30, what="hold to start"
    )
    return backfill_id, driver, started


def test_a_worker_whose_clock_is_behind_keeps_its_long_try(
    pg_stack: Stack,
    engine_of: Callable[[Stack], Engine],
    workers: WorkerPool,
    coordinators: Coordinators,
    tmp_path: Path,
) -> None:
    stack = pg_stack.with_timeouts(**HEARTBEATS)
    engine = engine_of(stack)
    skew = Skew.create(tmp_path)
    workers.start(stack, 1, env=skew.env())
    backfill_id, driver, _ = hold_started(stack, engine, coordinators)
    hold = the_ti(engine, backfill_id, "hold")
    claimed = row_of(engine, hold.id)["start_date"]
    skew.set(-TWO_HOURS)  # the clock jumps back under the running try

    def beating_long() -> bool:  # still running, and beating, for three heartbeat timeouts
        row = row_of(engine, hold.id)
        assert row["state"] == "running", f"the live try was taken away: {row}"
        return (row["heartbeat_at"] - claimed).total_seconds() >= 3 * stack.heartbeat_timeout

    wait_until(beating_long, timeout=60, what="three heartbeat timeouts of beats")
    stack.open_gate(HOLD_1)

    outcome = driver.result(DRIVE_TIMEOUT)
    assert outcome.state == "success", outcome
    assert [(r.from_state, r.to_state) for r in journal(engine, hold.id)][-1] == (
        "running",
        "success",
    )
    assert row_of(engine, hold.id)["try_number"] == 1
    assert_each_try_started_once(stack.ledger, TRIES)


def test_a_killed_worker_whose_clock_is_ahead_is_reaped_after_the_timeout(
    pg_stack: Stack,
    engine_of: Callable[[Stack], Engine],
    workers: WorkerPool,
    coordinators: Coordinators,
    tmp_path: Path,
) -> None:
    stack = pg_stack.with_timeouts(**HEARTBEATS)
    engine = engine_of(stack)
    (ahead,) = workers.start(stack, 1, env=Skew.create(tmp_path, TWO_HOURS).env())
    backfill_id, driver, started = hold_started(stack, engine, coordinators)
    assert ahead.owns(started.pid)
    stack.open_gate(HOLD_2)  # the retry ends at once
    workers.start(stack, 1)
    ahead.signal(signal.SIGKILL)
    ahead.process.wait(timeout=30)

    outcome = driver.result(DRIVE_TIMEOUT)
    assert outcome.state == "success", outcome
    hold = the_ti(engine, backfill_id, "hold")
    assert (hold.state, hold.try_number) == ("success", 2)
    assert_reaped_once_after_the_timeout(engine, hold.id, stack.heartbeat_timeout)
    retried = stack.ledger.first("start", HOLD_2)
    assert retried is not None
    assert not ahead.owns(retried.pid)
    assert_each_try_started_once(stack.ledger, TRIES | {HOLD_2})
