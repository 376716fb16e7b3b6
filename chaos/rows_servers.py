"""Rows where PostgreSQL fails: a storm of killed connections, a restart of the server."""

from __future__ import annotations

import random
import time

import sqlalchemy as sa
from integration.servers import PostgresServer
from sqlalchemy.engine import make_url

from backfill.store.db import create_engine_for, migrate

from . import plays
from .evidence import Trial
from .matrix import Row, Stage
from .scene import admin_engine, private_server

STORM_SECONDS = 10.0
GAP = (0.3, 0.7)  # seconds between two rounds of kills


def storm(admin_url: str, database: str, seconds: float) -> list[int]:
    """Kill every connection to `database` (`pg_terminate_backend`) every 0.3-0.7 s for
    `seconds` (tests/integration/test_outages.py's storm); the victims of each round."""
    kill = sa.text(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = :db AND pid <> pg_backend_pid()"
    )
    admin, rounds = admin_engine(admin_url), []
    try:
        with admin.connect() as conn:
            ends = time.monotonic() + seconds
            while time.monotonic() < ends:
                rounds.append(int(conn.execute(kill, {"db": database}).scalar_one()))
                time.sleep(random.uniform(*GAP))
    finally:
        admin.dispose()
    return rounds


def connection_storm(stage: Stage) -> Trial:
    scene = stage.scene()
    # No retries (a lost outcome fails its TI), and tries that last: the storm hits work
    # in flight for all its length.
    backfill_id = plays.launch(scene, "chaos_steady")
    scene.wait_done(backfill_id, 0.2)
    url = make_url(scene.stack.db_url)
    admin_url = url.set(database="postgres").render_as_string(hide_password=False)
    rounds = storm(admin_url, str(url.database), STORM_SECONDS)
    seconds = scene.await_final(backfill_id, stage.size.deadline)
    hits = sum(1 for victims in rounds if victims)
    checks = {f"{hits} rounds killed connections ({sum(rounds)} in all)": hits >= 5}
    note = f"every connection to the row's database killed every 0.3-0.7 s for {STORM_SECONDS:g} s"
    return Trial(scene, backfill_id, seconds, checks, note=note)


def postgres_restarted(stage: Stage) -> Trial:
    server = stage.exits.enter_context(private_server(PostgresServer))
    url = server.create_database("chaos")
    engine = create_engine_for(url)
    migrate(engine)
    engine.dispose()
    scene = stage.scene(db_url=url)
    backfill_id = plays.launch(scene, "chaos_strict")
    daemon = scene.coordinators.processes[-1]
    scene.wait_done(backfill_id, 0.3)
    scene.engine.dispose()  # the row's own reads reconnect after the restart
    # Down longer than the heartbeat timeout: every running try's heartbeat is stale
    # when it returns, and none may be reaped for it.
    server.restart_after(scene.stack.heartbeat_timeout + 2, mode="immediate")
    seconds = scene.await_final(backfill_id, stage.size.deadline)
    checks = {
        "the coordinator saw the database go and come back": (
            "database reachable again" in daemon.output()
        ),
        "nothing reaped for the outage": plays.reaped(scene.engine, backfill_id) == 0,
    }
    note = "a private PostgreSQL, stopped -m immediate, down for the heartbeat timeout + 2 s"
    return Trial(scene, backfill_id, seconds, checks, note=note)


ROWS = [
    Row("pg-storm", "pg_terminate_backend storm", connection_storm),
    Row("pg-restart", "PostgreSQL restarted (private server)", postgres_restarted),
]
