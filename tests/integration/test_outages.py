"""Outages (DESIGN 5, guarantee 2): a dropped connection never fails a task or kills a driver.

- a connection storm: every connection to the test database is killed
  (`pg_terminate_backend`) every 0.3-0.7 s for 10 s while a 216-TI backfill
  runs, driven by `backfill run` and by `backfill coordinator --once`;
  `STORM_ROUNDS` rounds of each (1 in `make test`, 25 in `make stress`);
- PostgreSQL restarted mid-run: a private server, down for longer than the
  heartbeat timeout, so that only the coordinator's grace after its own
  outage keeps it from reaping tries whose workers lost the database too;
- Redis restarted mid-run: a private server that persists nothing, so every
  queued message is lost and must be re-dispatched.

Each ends with the driver exiting 0, every TI `success` on its first try
(the DAG has no retries: an outcome lost to the outage would fail its TI),
one claim per TI in the journal, and each try started once by the ledger.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from support.processes import CliProcess, Coordinators, WorkerPool
from support.stack import Stack
from support.waiting import wait_until

from backfill.store import reports
from backfill.store.db import create_engine_for, migrate

from .checks import (
    assert_all_succeeded_first_try,
    assert_each_try_started_once,
    backfill_ids,
    backfill_row,
    claims_per_ti,
    create_backfill,
    task_instances_of,
)
from .servers import PostgresServer, RedisServer

DAG_ID = "outage_bash"
START, END = "2016-01-01", "2016-02-05"  # 36 daily runs of 6 tasks: 216 TIs
TIS = 36 * 6
# Silent 4 s, a try is reaped: outages longer than that are the hard case.
TIMEOUTS = {"heartbeat_interval": 0.5, "heartbeat_timeout": 4.0, "queued_timeout": 5.0}
DRIVE_TIMEOUT = 180.0
STORM_ROUNDS = int(os.environ.get("BACKFILL_STORM_ROUNDS", "1"))
STORM_SECONDS = 10.0


@dataclass
class Storm:
    """Kills every connection to one database at random intervals, from an admin connection."""

    admin_url: str
    database: str
    kills: list[tuple[float, int]] = field(default_factory=list)  # (monotonic time, victims)

    def rage(self, seconds: float, *, gap: tuple[float, float] = (0.3, 0.7)) -> None:
        admin = create_engine_for(self.admin_url).execution_options(isolation_level="AUTOCOMMIT")
        kill = sa.text(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = :db AND pid <> pg_backend_pid()"
        )
        try:
            with admin.connect() as conn:
                ends = time.monotonic() + seconds
                while time.monotonic() < ends:
                    victims = conn.execute(kill, {"db": self.database}).scalar_one()
                    self.kills.append((time.monotonic(), int(victims)))
                    time.sleep(random.uniform(*gap))
        finally:
            admin.dispose()

    def kills_before(self, moment: float) -> int:
        return sum(1 for at, victims in self.kills if at < moment and victims)


def on_private_database(stack: Stack, server: PostgresServer) -> Stack:
    """`stack` on a migrated database of `server`, with this module's timeouts."""
    url = server.create_database("backfill")
    schema = create_engine_for(url)
    migrate(schema)
    schema.dispose()
    return stack.with_database(url).with_timeouts(**TIMEOUTS)


def wait_under_way(engine: Engine, backfill_id: int, driver: CliProcess) -> None:
    """Until some TIs of the backfill succeeded and some run: a fault then hits work in flight."""

    def under_way() -> bool:
        states = [ti.state for ti in task_instances_of(engine, backfill_id)]
        return states.count("success") >= 12 and "running" in states

    wait_until(under_way, timeout=60, what="the backfill to be under way", explain=driver.output)


def reports_of(engine: Engine, backfill_id: int) -> dict[str, Any] | None:
    with engine.connect() as conn:
        return reports.read(conn, backfill_id)


def assert_said_once(driver: CliProcess, *notices: str) -> None:
    output = driver.output()
    for notice in notices:
        assert output.count(notice) == 1, output
    assert "Traceback" not in output, output


def start_driver(
    driver: str, stack: Stack, engine: Engine, coordinators: Coordinators
) -> tuple[CliProcess, int]:
    """`backfill run` of the whole range, or `backfill create` + `backfill coordinator --once`."""
    if driver == "run":
        process = coordinators.cli(stack, "run", DAG_ID, "-s", START, "-e", END)
        ids = wait_until(
            lambda: backfill_ids(engine), timeout=60, what="`backfill run` to create the backfill"
        )
        return process, ids[0]
    backfill_id = create_backfill(engine, stack.dag(DAG_ID), START, END)
    return coordinators.cli(stack, "coordinator", "--once"), backfill_id


def assert_finished_unharmed(stack: Stack, engine: Engine, backfill_id: int) -> None:
    assert backfill_row(engine, backfill_id).state == "success"
    tis = task_instances_of(engine, backfill_id)
    assert len(tis) == TIS
    assert_all_succeeded_first_try(tis)
    claims = claims_per_ti(engine, backfill_id)
    assert sorted(set(claims.values())) == [1], f"TIs claimed more than once: {claims}"
    assert_each_try_started_once(stack.ledger, {ti.key for ti in tis})


@pytest.mark.storm
@pytest.mark.parametrize("driver", ["run", "coordinator"])
@pytest.mark.parametrize("round_", range(STORM_ROUNDS), ids=lambda n: f"round{n}")
def test_a_connection_storm_loses_nothing(
    pg_stack: Stack,
    engine_of: Callable[[Stack], Engine],
    workers: WorkerPool,
    coordinators: Coordinators,
    *,
    driver: str,
    round_: int,
) -> None:
    stack = pg_stack.with_timeouts(**TIMEOUTS)
    workers.start(stack, 2, concurrency=4)
    engine = engine_of(stack)
    process, backfill_id = start_driver(driver, stack, engine, coordinators)
    wait_under_way(engine, backfill_id, process)
    url = make_url(stack.db_url)
    storm = Storm(url.set(database="postgres").render_as_string(hide_password=False), url.database)
    storm.rage(STORM_SECONDS)  # this thread reads nothing meanwhile: its reads would be hit too

    code = process.wait(timeout=DRIVE_TIMEOUT)
    ended = time.monotonic()
    assert code == 0, process.output()
    assert storm.kills_before(ended) >= 10, f"the storm hit too little: {storm.kills}"
    assert_finished_unharmed(stack, engine, backfill_id)


def test_postgresql_restarted_mid_run_loses_nothing(
    pg_stack: Stack,
    postgres_server: PostgresServer,
    engine_of: Callable[[Stack], Engine],
    workers: WorkerPool,
    coordinators: Coordinators,
) -> None:
    stack = on_private_database(pg_stack, postgres_server)
    workers.start(stack, 2, concurrency=4)
    engine = engine_of(stack)
    process, backfill_id = start_driver("run", stack, engine, coordinators)
    wait_under_way(engine, backfill_id, process)
    # Down for longer than the heartbeat timeout: every running try's heartbeat
    # is stale when the server returns, yet none may be reaped.
    postgres_server.restart_after(stack.heartbeat_timeout + 2, mode="immediate")

    assert process.wait(timeout=DRIVE_TIMEOUT) == 0, process.output()
    assert_said_once(process, "database unreachable since", "database reachable again after")
    assert_finished_unharmed(stack, engine, backfill_id)


def test_redis_restarted_mid_run_loses_nothing(
    pg_stack: Stack,
    redis_server: RedisServer,
    engine_of: Callable[[Stack], Engine],
    workers: WorkerPool,
    coordinators: Coordinators,
) -> None:
    stack = pg_stack.with_broker(redis_server.url).with_timeouts(**TIMEOUTS)
    workers.start(stack, 2, concurrency=4)
    engine = engine_of(stack)
    process, backfill_id = start_driver("run", stack, engine, coordinators)
    wait_under_way(engine, backfill_id, process)
    # Nothing persisted: every message waiting in the broker is lost with it, and
    # the tries running now end while it is down, so their successors' messages fail.
    redis_server.stop()
    # The driver tells `backfill status` too (its report), not only its own output.
    wait_until(
        lambda: (reports_of(engine, backfill_id) or {}).get("broker_down_since"),
        timeout=60,
        what="the driver's report to say the broker is unreachable",
        explain=process.output,
    )
    redis_server.start()

    assert process.wait(timeout=DRIVE_TIMEOUT) == 0, process.output()
    assert_said_once(process, "broker unreachable since", "broker reachable again after")
    assert_finished_unharmed(stack, engine, backfill_id)


def test_a_run_stopped_while_the_database_is_down_exits_130_resumable(
    pg_stack: Stack,
    postgres_server: PostgresServer,
    engine_of: Callable[[Stack], Engine],
    coordinators: Coordinators,
) -> None:
    stack = on_private_database(pg_stack, postgres_server)
    engine = engine_of(stack)
    process, backfill_id = start_driver("run", stack, engine, coordinators)  # no workers
    wait_until(
        lambda: backfill_row(engine, backfill_id).state == "running",
        timeout=60,
        what="the backfill to be driven",
        explain=process.output,
    )
    engine.dispose()
    postgres_server.stop("immediate")
    wait_until(
        lambda: "database unreachable since" in process.output(),
        timeout=60,
        what="`backfill run` to say the database is unreachable",
        explain=process.output,
    )
    process.process.send_signal(signal.SIGINT)

    assert process.wait(timeout=60) == 130, process.output()
    output = process.output()
    assert f"backfill {backfill_id} is resumable: backfill resume {backfill_id}" in output, output
    assert "Traceback" not in output, output
    postgres_server.start()
    assert backfill_row(engine, backfill_id).state == "running"  # kept as it was
