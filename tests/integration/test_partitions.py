"""Several hosts with partitions (DESIGN 5 guarantees 1-3, HA of section 6), on one
machine: workers and coordinators each in a network namespace of their own
(`support.netns`), a private PostgreSQL and a private Redis listening on the
bridge's gateway address, as a database host and a broker host would.

- a worker partitioned from everything mid-task: its try is reaped after the
  heartbeat timeout and retried on another host; once the link heals, the old
  try's late outcome is refused (fenced) and leaves the row and the journal
  as they were; each try's callable started once;
- a coordinator daemon partitioned from the database: a standby daemon in
  another namespace takes the lease over; once healed, the old one finds its
  lease gone and stands by: it writes nothing more to the backfill;
- a worker partitioned from the broker only, while it still reaches the
  database: its running try keeps beating and its outcome counts (try 1
  succeeds, nothing is reaped); the rest runs on the other worker;
- a host cut off while its transaction holds a row lock: the server finds the
  peer gone within the heartbeat timeout (`db.liveness`) and ends the
  session, so the lock is not held for the kernel's two hours of keepalive.

The partitions are nftables drops: packets vanish, no connection is reset.
Namespaces and links are deleted even when a test fails (`netns.Network`).
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from support.ledger import Key
from support.netns import Host, Network
from support.processes import CliProcess, Coordinators, Worker, WorkerPool, kill_group, spawn
from support.rows import journal, row_of
from support.stack import Stack, utc
from support.waiting import wait_until

from backfill.store.db import create_engine_for, migrate
from backfill.store.schema import refused_writes

from .checks import (
    assert_all_succeeded_first_try,
    assert_each_try_started_once,
    backfill_row,
    claims_per_ti,
    create_backfill,
    max_overlap,
    set_pool,
    task_instances_of,
    the_ti,
)
from .servers import PostgresServer, RedisServer, started

DAY = "2016-01-01"
HOLD_TRY_1: Key = ("fault_gate", "hold", utc(DAY), 1)
# Reaping in seconds; a beat every 0.5 s gives a live worker 8 chances per timeout.
TIMEOUTS = {"heartbeat_interval": 0.5, "heartbeat_timeout": 4.0, "queued_timeout": 6.0}
DRIVE_TIMEOUT = 120.0


@pytest.fixture(scope="module")
def network() -> Iterator[Network]:
    with Network.create() as net:
        yield net


@pytest.fixture(scope="module")
def hosts(network: Network) -> dict[str, Host]:
    """Four hosts: two for workers, two for coordinators."""
    return {name: network.host(name) for name in ("w1", "w2", "c1", "c2")}


@pytest.fixture(scope="module")
def database_host(network: Network) -> Iterator[PostgresServer]:
    yield from started(lambda: PostgresServer(also=(network.gateway,)), "PostgreSQL")


@pytest.fixture(scope="module")
def broker_host(network: Network) -> Iterator[RedisServer]:
    yield from started(lambda: RedisServer(also=(network.gateway,)), "Redis")


@dataclass(frozen=True)
class Fleet:
    """The stack of a test (URLs naming the gateway), its hosts and the servers' ports."""

    stack: Stack
    hosts: dict[str, Host]
    database_port: int
    broker_port: int


@pytest.fixture
def fleet(
    network: Network,
    hosts: dict[str, Host],
    database_host: PostgresServer,
    broker_host: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Fleet]:
    """A fresh migrated database and an empty broker, every host healed at the end."""
    name = f"parts_{uuid.uuid4().hex[:8]}"
    database_host.create_database(name)
    engine = create_engine_for(database_host.url(name))
    migrate(engine)
    engine.dispose()
    broker_host.flush()
    stack = Stack.create(
        database_host.url(name, host=network.gateway), None, tmp_path_factory.mktemp("fleet")
    )
    stack = stack.with_broker(broker_host.url_at(network.gateway)).with_timeouts(**TIMEOUTS)
    try:
        yield Fleet(stack, hosts, database_host.port, broker_host.port)
    finally:
        for host in hosts.values():
            host.heal()


def ran_on(worker: Worker, claimant: str | None) -> bool:
    """Whether a TI's claimant (`host:pid`) is a process of `worker`."""
    return claimant is not None and worker.owns(int(claimant.rsplit(":", 1)[1]))


def refusals(engine: Engine, ti_id: int) -> list[str]:
    """The kinds of the writes the fence refused for one TI, oldest first."""
    stmt = (
        sa.select(refused_writes.c.kind)
        .where(refused_writes.c.task_instance_id == ti_id)
        .order_by(refused_writes.c.id)
    )
    with engine.connect() as conn:
        return list(conn.execute(stmt).scalars())


def test_a_worker_partitioned_mid_task_is_reaped_retried_elsewhere_and_fenced(
    fleet: Fleet,
    engine_of: Callable[[Stack], Engine],
    workers: WorkerPool,
    coordinators: Coordinators,
) -> None:
    stack, hosts = fleet.stack, fleet.hosts
    engine = engine_of(stack)
    first = workers.start(stack, 1, host=hosts["w1"])[0]
    dag = stack.dag("fault_gate")
    backfill_id = create_backfill(engine, dag, DAY, DAY)
    coordinators.cli(stack, "coordinator", host=hosts["c1"])
    wait_until(
        lambda: stack.ledger.first("start", HOLD_TRY_1),
        timeout=60,
        what="hold's try 1 to start on w1",
    )
    workers.start(stack, 1, host=hosts["w2"])  # the other host the retry can go to
    hosts["w1"].partition()
    hold_id = the_ti(engine, backfill_id, "hold").id

    def retried() -> bool:
        hold = the_ti(engine, backfill_id, "hold")
        return (hold.state, hold.try_number) == ("success", 2)

    wait_until(retried, timeout=60, what="try 1 reaped and try 2 to succeed on w2")
    settled, settled_journal = row_of(engine, hold_id), journal(engine, hold_id)
    # Try 1's callable ends now, behind the partition: its outcome waits for the link.
    stack.open_gate(HOLD_TRY_1)
    wait_until(
        lambda: stack.ledger.first("after", HOLD_TRY_1),
        timeout=30,
        what="try 1's callable to end behind the partition",
    )
    hosts["w1"].heal()
    wait_until(
        lambda: "finish" in refusals(engine, hold_id) or "heartbeat" in refusals(engine, hold_id),
        timeout=60,
        what="w1's late write to be refused once the link healed",
        explain=first.output,
    )
    wait_until(
        lambda: backfill_row(engine, backfill_id).state == "success",
        timeout=DRIVE_TIMEOUT,
        what="the backfill to succeed",
    )
    assert row_of(engine, hold_id) == settled  # the late outcome moved nothing
    assert journal(engine, hold_id) == settled_journal
    hold = the_ti(engine, backfill_id, "hold")
    assert not ran_on(first, hold.claimant), hold  # try 2 ran on the other host
    tries = {ti.key for ti in task_instances_of(engine, backfill_id)} | {HOLD_TRY_1}
    assert_each_try_started_once(stack.ledger, tries)


def actors_after(engine: Engine, backfill_id: int, actor: str) -> list[tuple[str, str, str]]:
    """The journal rows (from, to, actor) of the backfill's TIs written by `actor`
    after the first row written by anyone else: what `actor` did once deposed."""
    journal_rows = [
        (row.id, row.from_state, row.to_state, row.actor)
        for ti in task_instances_of(engine, backfill_id)
        for row in journal(engine, ti.id)
    ]
    others = [i for i, _, _, who in journal_rows if who.startswith("coordinator:") and who != actor]
    first_other = min(others, default=None)
    return [
        (from_state, to_state, who)
        for i, from_state, to_state, who in journal_rows
        if who == actor and first_other is not None and i > first_other
    ]


def daemon_of(daemons: list[CliProcess], owner: str) -> int:
    """Which daemon holds a lease owned `host:pid:nonce` (`Coordinator.owner`)."""
    pid = int(owner.split(":")[1])
    return next(i for i, daemon in enumerate(daemons) if daemon.process.pid == pid)


def test_a_coordinator_cut_off_from_the_database_is_replaced_and_stands_down(
    fleet: Fleet,
    engine_of: Callable[[Stack], Engine],
    workers: WorkerPool,
    coordinators: Coordinators,
) -> None:
    stack, hosts = fleet.stack, fleet.hosts
    engine = engine_of(stack)
    set_pool(engine, "ha_slots", 2)
    workers.start(stack, 1, concurrency=2, host=hosts["w1"])
    places = [hosts["c1"], hosts["c2"]]
    daemons = [coordinators.cli(stack, "coordinator", host=place) for place in places]
    backfill_id = create_backfill(engine, stack.dag("ha_wide"), "2016-01-01", "2016-01-20")

    def lease_owner() -> str | None:
        owner = backfill_row(engine, backfill_id).lease_owner
        return None if owner is None else str(owner)

    def succeeded() -> int:
        return sum(ti.state == "success" for ti in task_instances_of(engine, backfill_id))

    old = wait_until(
        lambda: succeeded() >= 6 and lease_owner(),
        timeout=90,
        what="a daemon to drive the backfill and 6 TIs to succeed",
        explain=lambda: "\n".join(d.tails() for d in daemons),
    )
    cut_off = daemon_of(daemons, old)
    places[cut_off].block(fleet.database_port)
    new = wait_until(
        lambda: (owner := lease_owner()) not in (None, old) and owner,
        timeout=60,
        what="the standby daemon to take the lease over",
        explain=lambda: "\n".join(d.tails() for d in daemons),
    )
    assert daemon_of(daemons, new) != cut_off
    done_at_takeover = succeeded()
    wait_until(
        lambda: succeeded() >= done_at_takeover + 4,
        timeout=60,
        what="the new driver to get 4 more TIs done",
    )
    places[cut_off].heal()
    wait_until(
        lambda: "took over the lease: standing by" in daemons[cut_off].output(),
        timeout=60,
        what="the old driver to find its lease gone and stand by",
        explain=daemons[cut_off].tails,
    )
    wait_until(
        lambda: backfill_row(engine, backfill_id).state == "success",
        timeout=DRIVE_TIMEOUT,
        what="the backfill to succeed under its new driver",
        explain=lambda: "\n".join(d.tails() for d in daemons),
    )
    # Once deposed, the old driver wrote nothing: no queueing, no reaping, no run.
    assert actors_after(engine, backfill_id, f"coordinator:{old}") == []
    tis = task_instances_of(engine, backfill_id)
    assert_all_succeeded_first_try(tis)
    assert set(claims_per_ti(engine, backfill_id).values()) == {1}
    assert_each_try_started_once(stack.ledger, {ti.key for ti in tis})
    peak = max_overlap(stack.ledger.spans().values())
    assert peak <= 2, f"{peak} tries ran at once in the pool of 2 slots"


HELD: Key = ("ha_gate", "held", utc(DAY), 1)


def test_a_worker_cut_off_from_the_broker_only_keeps_its_try_and_its_outcome(
    fleet: Fleet,
    engine_of: Callable[[Stack], Engine],
    workers: WorkerPool,
    coordinators: Coordinators,
) -> None:
    stack, hosts = fleet.stack, fleet.hosts
    engine = engine_of(stack)
    cut_off = workers.start(stack, 1, host=hosts["w1"])[0]
    backfill_id = create_backfill(engine, stack.dag("ha_gate"), DAY, DAY)
    coordinators.cli(stack, "coordinator", host=hosts["c1"])
    wait_until(lambda: stack.ledger.first("start", HELD), timeout=60, what="held's try 1 to start")
    other = workers.start(stack, 1, host=hosts["w2"])[0]
    hosts["w1"].block(fleet.broker_port)
    held_id = the_ti(engine, backfill_id, "held").id
    claimed_at = next(r.at for r in journal(engine, held_id) if r.to_state == "running")
    timeout = stack.heartbeat_timeout

    def beating_for() -> float:
        beat = row_of(engine, held_id)["heartbeat_at"]
        return 0.0 if beat is None else (beat - claimed_at).total_seconds()

    # Alive through the broker partition: it beats on, past two heartbeat timeouts.
    wait_until(
        lambda: beating_for() > 2 * timeout,
        timeout=60,
        what=f"held's try 1 to beat for {2 * timeout:g}s behind the broker partition",
    )
    stack.open_gate(HELD)
    wait_until(
        lambda: backfill_row(engine, backfill_id).state == "success",
        timeout=DRIVE_TIMEOUT,
        what="the backfill to succeed, `after` on the other worker",
    )
    held, after = the_ti(engine, backfill_id, "held"), the_ti(engine, backfill_id, "after")
    assert (held.state, held.try_number) == ("success", 1), held  # never reaped: it beat
    assert ran_on(cut_off, held.claimant), held
    assert ran_on(other, after.claimant), after
    assert [r.to_state for r in journal(engine, held_id)] == ["queued", "running", "success"]
    tis = task_instances_of(engine, backfill_id)
    assert_each_try_started_once(stack.ledger, {ti.key for ti in tis})


# Run in a host's namespace: lock a backfill's row in a transaction, say so, then hang.
HOLD_THE_ROW = """
import sys, time
import sqlalchemy as sa
from backfill.store.db import create_engine_for
url, dead_after, backfill_id = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
with create_engine_for(url, dead_after=dead_after).begin() as conn:
    conn.execute(sa.text("SELECT id FROM backfills WHERE id = :id FOR UPDATE"), {"id": backfill_id})
    print("locked", flush=True)
    time.sleep(600)
"""


def test_a_host_cut_off_mid_transaction_does_not_hold_its_row_locks(
    fleet: Fleet,
    engine_of: Callable[[Stack], Engine],
    tmp_path: Path,
) -> None:
    stack, holder_host = fleet.stack, fleet.hosts["c1"]
    engine = engine_of(stack)
    backfill_id = create_backfill(engine, stack.dag("ha_gate"), DAY, DAY)
    argv = [sys.executable, "-c", HOLD_THE_ROW, stack.db_url, "4", str(backfill_id)]
    log = tmp_path / "holder.log"
    holder = spawn(holder_host.wrap(argv), stack.env(), log)
    try:
        wait_until(lambda: "locked" in log.read_text(), timeout=30, what="the row to be locked")
        holder_host.partition()
        with engine.begin() as conn:  # blocks until the server ends the holder's session
            conn.execute(sa.text("SET LOCAL lock_timeout = '60s'"))
            locked = conn.execute(
                sa.text("SELECT id FROM backfills WHERE id = :id FOR UPDATE"), {"id": backfill_id}
            )
            assert locked.scalar() == backfill_id
    finally:
        kill_group(holder)
