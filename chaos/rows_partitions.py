"""The three partitions of tests/integration/test_partitions.py, at the matrix's size.

Each row is a network of its own (`support.netns.Network`: hosts are Linux
network namespaces on a bridge), a private PostgreSQL and a private Redis
listening on the bridge's gateway, workers and coordinators each on a host;
a partition is an nftables drop (packets vanish, nothing is reset).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import sqlalchemy as sa
from integration.servers import PostgresServer, RedisServer
from support.netns import Host, Network
from support.waiting import wait_until

from backfill.store.db import create_engine_for, migrate
from backfill.store.schema import dag_runs, task_instances, ti_transitions

from . import plays
from .evidence import Trial, refusals
from .matrix import Row, Stage
from .scene import Scene, private_server


@dataclass(frozen=True)
class Fleet:
    scene: Scene
    hosts: dict[str, Host]
    database_port: int
    broker_port: int


def fleet(stage: Stage, *names: str) -> Fleet:
    """A network with `names` hosts, PostgreSQL and Redis on its gateway, a scene on them."""
    network = stage.exits.enter_context(Network.create())
    gateway = network.gateway
    database = stage.exits.enter_context(private_server(lambda: PostgresServer(also=(gateway,))))
    broker = stage.exits.enter_context(private_server(lambda: RedisServer(also=(gateway,))))
    database.create_database("chaos")
    engine = create_engine_for(database.url("chaos"))
    migrate(engine)
    engine.dispose()
    hosts = {name: network.host(name) for name in names}
    scene = stage.scene(broker=broker.url_at(gateway), db_url=database.url("chaos", host=gateway))
    return Fleet(scene, hosts, database.port, broker.port)


def w1_busy(stage: Stage, dag_id: str) -> tuple[Fleet, int]:
    """Workers on hosts w1 and w2, a coordinator on c1, driving a backfill of `dag_id`
    (returned with the fleet) 30% done, once w1 runs a try."""
    cut = fleet(stage, "w1", "w2", "c1")
    scene, hosts = cut.scene, cut.hosts
    [w1] = scene.start_workers(1, host=hosts["w1"])
    scene.start_workers(1, host=hosts["w2"])
    backfill_id = scene.create(dag_id)
    scene.launch()
    scene.coordinators.cli(scene.stack, "coordinator", host=hosts["c1"])
    scene.wait_done(backfill_id, 0.3)
    wait_until(
        lambda: plays.busy_worker(scene, backfill_id, [w1]),
        timeout=60,
        what="w1 to run a try",
        interval=0.02,
    )
    return cut, backfill_id


def worker_partitioned(stage: Stage) -> Trial:
    cut, backfill_id = w1_busy(stage, "chaos_steady_retry")
    scene, hosts = cut.scene, cut.hosts
    hosts["w1"].partition()
    wait_until(
        lambda: plays.reaped(scene.engine, backfill_id) >= 1,
        timeout=60,
        what="w1's try to be reaped behind the partition",
    )
    time.sleep(2.0)  # its callable ends behind the partition: the outcome waits
    hosts["w1"].heal()
    seconds = scene.await_final(backfill_id, stage.size.deadline)
    stale = wait_until(
        lambda: (r := refusals(scene.engine, backfill_id))["finish"] + r["heartbeat"],
        timeout=60,
        what="w1's late writes to be refused once healed",
    )
    checks = {
        "w1's tries reaped behind the partition": plays.reaped(scene.engine, backfill_id) >= 1,
        f"{stale} late writes of w1 refused once healed": stale >= 1,
    }
    return Trial(scene, backfill_id, seconds, checks, note="w1 cut off from everything")


def coordinator_cut_off(stage: Stage) -> Trial:
    cut = fleet(stage, "w1", "w2", "c1", "c2")
    scene, hosts = cut.scene, cut.hosts
    scene.start_workers(1, host=hosts["w1"])
    scene.start_workers(1, host=hosts["w2"])
    places = [hosts["c1"], hosts["c2"]]  # two daemons: one drives, the other stands by
    daemons = [scene.coordinators.cli(scene.stack, "coordinator", host=h) for h in places]
    backfill_id = scene.create("chaos_steady")  # tries that last: a takeover mid-run
    scene.launch()
    scene.wait_done(backfill_id, 0.2)
    old = plays.lease_owner(scene, backfill_id)
    assert old is not None
    cut_off = next(i for i, d in enumerate(daemons) if d.process.pid == int(old.split(":")[1]))
    places[cut_off].block(cut.database_port)
    new: str = wait_until(
        lambda: (
            plays.lease_owner(scene, backfill_id)
            if plays.lease_owner(scene, backfill_id) != old
            else None
        ),
        timeout=60,
        what="the standby daemon to take the lease over",
    )
    places[cut_off].heal()
    seconds = scene.await_final(backfill_id, stage.size.deadline)
    # Once healed, the old driver finds the lease taken (and stands by), or, if its
    # connection came back only after the end, the backfill ended by its successor.
    said = daemons[cut_off].output()
    ended = f"backfill {backfill_id} (chaos_steady): success"
    checks = {
        "the standby took the lease over": bool(new),
        "the old driver stood by (or found the end) once healed": (
            "took over the lease: standing by" in said or ended in said
        ),
        "the old driver wrote nothing once deposed": _written_after(scene, backfill_id, old, new)
        == 0,
    }
    note = "the lease owner's host cut off from the database port"
    return Trial(scene, backfill_id, seconds, checks, note=note)


def _written_after(scene: Scene, backfill_id: int, old: str, new: str) -> int:
    """Journal rows the old driver wrote after the new one's first: what it did deposed."""
    journal, ti, run = ti_transitions, task_instances, dag_runs
    of_backfill = (
        sa.select(journal.c.id, journal.c.actor)
        .join(ti, ti.c.id == journal.c.task_instance_id)
        .join(run, run.c.id == ti.c.dag_run_id)
        .where(run.c.backfill_id == backfill_id)
        .order_by(journal.c.id)
    )
    with scene.engine.connect() as conn:
        rows = list(conn.execute(of_backfill))
    first_new = min((i for i, actor in rows if actor == f"coordinator:{new}"), default=None)
    if first_new is None:
        return 0
    return sum(1 for i, actor in rows if actor == f"coordinator:{old}" and i > first_new)


def worker_cut_from_broker(stage: Stage) -> Trial:
    cut, backfill_id = w1_busy(stage, "chaos_steady")  # no retries: a live try reaped fails
    scene, hosts = cut.scene, cut.hosts
    hosts["w1"].block(cut.broker_port)
    time.sleep(2 * scene.stack.heartbeat_timeout)  # alive, beating to the database
    hosts["w1"].heal()
    seconds = scene.await_final(backfill_id, stage.size.deadline)
    checks = {"nothing reaped: w1 beat on": plays.reaped(scene.engine, backfill_id) == 0}
    note = f"w1 cut off from the broker port for {2 * scene.stack.heartbeat_timeout:g} s"
    return Trial(scene, backfill_id, seconds, checks, note=note)


ROWS = [
    Row("partition-worker", "worker partitioned mid-task (netns)", worker_partitioned),
    Row("partition-coordinator", "coordinator cut off from the DB (netns)", coordinator_cut_off),
    Row("partition-broker", "worker cut off from the broker only (netns)", worker_cut_from_broker),
]
