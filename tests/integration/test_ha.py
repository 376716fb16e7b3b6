"""High availability (DESIGN 6) with real processes: `backfill coordinator` daemons,
`celery worker` processes, PostgreSQL and Redis; backfills made by `backfill create`.

- two daemons; the one driving (the lease owner names its process) SIGKILLed
  mid-run: the other takes over within BACKFILL_HEARTBEAT_TIMEOUT plus
  TAKEOVER_MARGIN seconds, and the backfill ends success with every try run
  once and the pool's 2 slots never exceeded;
- `backfill pause`: the daemon stops dispatching and releases the lease at
  once (not when it lapses); `backfill resume` then drives at once, the
  daemon standing by;
- `backfill resume` while a live daemon drives: it stands by, saying so, and
  reports the end; only the daemon drove.

"Ran" is counted from the execution ledger; "drove" from the actors of the
journal's queue transitions (`drivers_in_turn`). The root conftest checks
every journaled transition against its table after each test.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

from sqlalchemy.engine import Engine
from support.ledger import Key
from support.processes import CliProcess, Coordinators, WorkerPool
from support.stack import Stack, utc
from support.waiting import wait_until

from .checks import (
    assert_all_succeeded_first_try,
    assert_each_try_started_once,
    backfill_row,
    claims_per_ti,
    drivers_in_turn,
    max_overlap,
    set_pool,
    task_instances_of,
)

WIDE, POOL, TIS = "ha_wide", "ha_slots", 40  # 5 tasks x 8 dates, in a pool of 2 slots
START, END = "2016-01-01", "2016-01-08"
HELD: Key = ("ha_gate", "held", utc(START), 1)
# Short, so a takeover takes seconds; the interval gives a live worker 6 beats a timeout.
HA_TIMEOUTS = {"heartbeat_interval": 1.0, "heartbeat_timeout": 6.0, "queued_timeout": 5.0}
TAKEOVER_MARGIN = 5.0  # seconds past the heartbeat timeout a takeover may take
DRIVE_TIMEOUT = 120.0


def pid_of(owner: str) -> int:
    """The process of a lease owner, `host:pid:nonce` (`Coordinator.owner`)."""
    return int(owner.split(":")[1])


def lease_owner(engine: Engine, backfill_id: int) -> str | None:
    owner = backfill_row(engine, backfill_id).lease_owner
    return None if owner is None else str(owner)


def create(coordinators: Coordinators, stack: Stack, dag_id: str, end: str = END) -> int:
    created = coordinators.cli(stack, "create", dag_id, "-s", START, "-e", end).finish(60)
    assert created.code == 0, created.log
    return int(created.stdout)


def start_wide(
    stack: Stack, engine: Engine, workers: WorkerPool, coordinators: Coordinators, daemons: int
) -> tuple[list[CliProcess], int]:
    """Workers with more slots than the pool, `daemons` coordinator daemons, and a
    backfill of `ha_wide` they drive."""
    set_pool(engine, POOL, 2)
    workers.start(stack, 2, concurrency=2)
    started = [coordinators.cli(stack, "coordinator") for _ in range(daemons)]
    return started, create(coordinators, stack, WIDE)


def wait_driven(engine: Engine, backfill_id: int, daemons: list[CliProcess], done: int) -> str:
    """Until a coordinator holds the lease and `done` TIs succeeded: the lease owner."""

    def driven() -> str | None:
        owner = lease_owner(engine, backfill_id)
        states = [ti.state for ti in task_instances_of(engine, backfill_id)]
        return owner if owner and states.count("success") >= done else None

    return wait_until(
        driven,
        timeout=90,
        what=f"a daemon to drive backfill {backfill_id} and {done} TIs to succeed",
        explain=lambda: "\n".join(d.tails() for d in daemons),
    )


def unfinished(engine: Engine, backfill_id: int) -> int:
    return sum(ti.state != "success" for ti in task_instances_of(engine, backfill_id))


def assert_ran_once_within_the_pool(stack: Stack, engine: Engine, backfill_id: int) -> None:
    assert backfill_row(engine, backfill_id).state == "success"
    tis = task_instances_of(engine, backfill_id)
    assert len(tis) == TIS
    assert_all_succeeded_first_try(tis)
    claims = claims_per_ti(engine, backfill_id)
    assert set(claims.values()) == {1}, f"TIs claimed more than once: {claims}"
    assert_each_try_started_once(stack.ledger, {ti.key for ti in tis})
    peak = max_overlap(stack.ledger.spans().values())
    assert peak == 2, f"{peak} tries ran at once in the pool of 2 slots"


def test_a_killed_daemon_is_taken_over_within_the_heartbeat_timeout(
    pg_stack: Stack,
    engine_of: Callable[[Stack], Engine],
    workers: WorkerPool,
    coordinators: Coordinators,
) -> None:
    stack = pg_stack.with_timeouts(**HA_TIMEOUTS)
    engine = engine_of(stack)
    daemons, backfill_id = start_wide(stack, engine, workers, coordinators, daemons=2)
    owner = wait_driven(engine, backfill_id, daemons, done=8)
    [driver] = [d for d in daemons if d.process.pid == pid_of(owner)]
    [survivor] = [d for d in daemons if d is not driver]
    wait_until(
        lambda: (
            f"backfill {backfill_id}: standing by, {owner} holds its lease" in survivor.output()
        ),
        timeout=30,
        what="the other daemon to stand by",
        explain=survivor.tails,
    )
    assert unfinished(engine, backfill_id) >= 5, "the backfill was nearly over before the kill"
    epoch = backfill_row(engine, backfill_id).lease_epoch

    killed = time.monotonic()
    os.killpg(driver.process.pid, signal.SIGKILL)
    row = wait_until(
        lambda: (row := backfill_row(engine, backfill_id)).lease_epoch > epoch and row,
        timeout=stack.heartbeat_timeout + 60,
        what="the other daemon to take the lease over",
        interval=0.02,
        explain=survivor.tails,
    )
    takeover = time.monotonic() - killed
    print(f"takeover {takeover:.2f}s after the kill (heartbeat timeout 6s)")
    assert driver.wait(timeout=30) == -signal.SIGKILL
    assert row.lease_owner is not None
    assert pid_of(row.lease_owner) == survivor.process.pid
    assert takeover <= stack.heartbeat_timeout + TAKEOVER_MARGIN

    wait_until(
        lambda: f"backfill {backfill_id} ({WIDE}): success" in survivor.output(),
        timeout=DRIVE_TIMEOUT,
        what="the other daemon to finish the backfill",
        explain=survivor.tails,
    )
    assert_ran_once_within_the_pool(stack, engine, backfill_id)
    assert drivers_in_turn(engine, backfill_id) == [
        f"coordinator:{owner}",
        f"coordinator:{row.lease_owner}",
    ]


def test_pause_frees_the_lease_at_once_and_resume_drives_without_waiting(
    pg_stack: Stack,
    engine_of: Callable[[Stack], Engine],
    workers: WorkerPool,
    coordinators: Coordinators,
) -> None:
    # A long timeout: a lease that merely lapsed would keep `resume` waiting 30 s.
    stack = pg_stack.with_timeouts(heartbeat_interval=1.0, heartbeat_timeout=30.0)
    engine = engine_of(stack)
    [daemon], backfill_id = start_wide(stack, engine, workers, coordinators, daemons=1)
    owner = wait_driven(engine, backfill_id, [daemon], done=6)

    paused = coordinators.cli(stack, "pause", str(backfill_id)).finish(60)
    assert paused.code == 0, paused.log
    # Released, not lapsed (a lapse leaves the owner): within a pass, long before 30 s.
    wait_until(
        lambda: lease_owner(engine, backfill_id) is None,
        timeout=10,
        what="the daemon to release the lease of the paused backfill",
        explain=daemon.tails,
    )
    assert f"backfill {backfill_id} ({WIDE}): paused; lease released" in daemon.output()
    # Dispatching stopped: what was queued drains, and the rest waits.
    wait_until(
        lambda: (
            not {"queued", "running"} & {t.state for t in task_instances_of(engine, backfill_id)}
        ),
        timeout=30,
        what="the tries queued before the pause to end",
    )
    assert unfinished(engine, backfill_id) >= 5, "the backfill was nearly over before the pause"
    assert drivers_in_turn(engine, backfill_id) == [f"coordinator:{owner}"]

    resume = coordinators.cli(stack, "resume", str(backfill_id))
    wait_until(
        lambda: (o := lease_owner(engine, backfill_id)) and pid_of(o) == resume.process.pid,
        timeout=15,  # the command's start-up, not the 30 s of a lapse
        what="`backfill resume` to take the lease",
        explain=resume.tails,
    )
    resumer = lease_owner(engine, backfill_id)
    finished = resume.finish(DRIVE_TIMEOUT)
    assert finished.code == 0, finished.log
    assert f"backfill {backfill_id} un-paused" in finished.stderr
    assert "waiting for" not in finished.stderr
    assert "standing by" not in finished.stderr
    assert f"backfill {backfill_id} of {WIDE}: success" in finished.stdout
    assert_ran_once_within_the_pool(stack, engine, backfill_id)
    assert drivers_in_turn(engine, backfill_id) == [
        f"coordinator:{owner}",
        f"coordinator:{resumer}",
    ]


def test_resume_stands_by_while_a_live_daemon_drives_and_reports_the_end(
    pg_stack: Stack,
    engine_of: Callable[[Stack], Engine],
    workers: WorkerPool,
    coordinators: Coordinators,
) -> None:
    stack = pg_stack.with_timeouts(**HA_TIMEOUTS)
    engine = engine_of(stack)
    workers.start(stack, 1)
    daemon = coordinators.cli(stack, "coordinator")
    backfill_id = create(coordinators, stack, "ha_gate", end=START)
    wait_until(
        lambda: stack.ledger.first("start", HELD),
        timeout=60,
        what="the gated task to start",
        explain=daemon.tails,
    )
    owner = lease_owner(engine, backfill_id)
    assert owner is not None
    assert pid_of(owner) == daemon.process.pid

    resume = coordinators.cli(stack, "resume", str(backfill_id))
    standing_by = f"standing by: coordinator {owner} is driving backfill {backfill_id}"
    wait_until(
        lambda: standing_by in resume.output(),
        timeout=60,
        what="`backfill resume` to stand by",
        explain=resume.tails,
    )
    assert lease_owner(engine, backfill_id) == owner
    stack.open_gate(HELD)
    finished = resume.finish(DRIVE_TIMEOUT)
    assert finished.code == 0, finished.log
    assert "un-paused" not in finished.stderr
    assert f"backfill {backfill_id} of ha_gate: success" in finished.stdout
    wait_until(
        lambda: f"backfill {backfill_id} (ha_gate): success" in daemon.output(),
        timeout=30,
        what="the daemon to log the end it drove",
        explain=daemon.tails,
    )
    tis = task_instances_of(engine, backfill_id)
    assert_all_succeeded_first_try(tis)
    assert_each_try_started_once(stack.ledger, {ti.key for ti in tis})
    assert drivers_in_turn(engine, backfill_id) == [f"coordinator:{owner}"]
