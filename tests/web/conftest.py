"""Fixtures of the web tests: a live `backfill web` over a real fleet, one per module.

- `live` (module): `LiveSite` on the root `module_db_url` (each backend the
  module lists in `BACKENDS`), the module's private Redis DB, the DAGs of
  `tests/dags_integration/`, one `celery worker` (2 slots), one `backfill
  coordinator` daemon driving whatever is created, and a `backfill web` with
  the API token `TOKEN`. Its `cli` runs real `backfill ...` commands on the
  same stack, so the API's answers can be compared with the CLI's.

Tests of one module share the database: each uses backfills of its own, and
leaves none running (a running one would change what the next test reads).
Every process is killed, by its own process group, in teardown.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine
from support.private_redis import PrivateRedis
from support.processes import Cli, Coordinators, WorkerPool
from support.stack import Stack
from support.waiting import wait_until
from support.web import WebServer, WebServers

from backfill.store.db import create_engine_for

TOKEN = "s3cret-web-token"
COMMAND_TIMEOUT = 60.0  # seconds a `backfill` command run to its end may take
ENDED = ("success", "failed", "cancelled")
DRIVE_TIMEOUT = 90.0  # seconds a backfill of these tests may take to end; they take a few


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: starts real worker processes (seconds, not ms)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "live" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)  # starts real processes


@dataclass(frozen=True)
class LiveSite:
    """A `backfill web` with token `TOKEN`, and the fleet and command line behind it."""

    stack: Stack
    cli: Cli
    web: WebServer
    db: Engine
    coordinators: Coordinators

    def api(self) -> httpx.Client:
        """A client of the API, carrying the token."""
        return self.web.client(token=TOKEN)

    def cli_json(self, *args: str) -> Any:
        """`backfill ARGS -o json`, parsed; the command must succeed."""
        done = self.cli(*args, "-o", "json")
        assert done.code == 0, done.log
        return json.loads(done.stdout)

    def create(self, dag_id: str, start: str, end: str, *options: str) -> int:
        """`backfill create`: the new backfill's id (the daemon drives it)."""
        return int(self.cli_json("create", dag_id, "-s", start, "-e", end, *options)["id"])

    def wait_state(self, backfill_id: int, *states: str, timeout: float = DRIVE_TIMEOUT) -> str:
        """Until backfill `backfill_id` is in one of `states`, as the API tells it."""
        with self.api() as api:

            def reached() -> str | None:
                state = str(api.get(f"/api/v1/backfills/{backfill_id}").json()["state"])
                return state if state in states else None

            return wait_until(
                reached,
                timeout=timeout,
                what=f"backfill {backfill_id} to be {' or '.join(states)}",
                interval=0.2,
                explain=lambda: "\n".join(c.tails() for c in self.coordinators.processes),
            )

    def wait_settled(self, backfill_id: int) -> None:
        """Until backfill `backfill_id` has ended, no coordinator holds it and none of its
        runs or TIs is queued or running (a cancelled backfill's runs are wound down by a
        coordinator): nothing will write to it any more."""
        with self.api() as api:

            def settled() -> bool:
                told = api.get(f"/api/v1/backfills/{backfill_id}").json()
                active = sum(
                    told[kind][state]
                    for kind in ("runs", "task_instances")
                    for state in ("queued", "running")
                )
                return told["state"] in ENDED and told["driver"] is None and active == 0

            wait_until(
                settled,
                timeout=DRIVE_TIMEOUT,
                what=f"backfill {backfill_id} to settle",
                interval=0.2,
                explain=lambda: "\n".join(c.tails() for c in self.coordinators.processes),
            )


@pytest.fixture(scope="module")
def live(
    module_db_url: str, module_broker: PrivateRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveSite]:
    module_broker.clear()  # no message of another backend's stack may reach these workers
    stack = Stack.create(module_db_url, module_broker, tmp_path_factory.mktemp("web"))
    logs = tmp_path_factory.mktemp("logs")
    workers, coordinators, servers = WorkerPool(logs), Coordinators(logs), WebServers(logs)
    db = create_engine_for(module_db_url)
    try:
        workers.start(stack, 1, concurrency=2)
        coordinators.cli(stack, "coordinator")
        web = servers.start(stack.env(), token=TOKEN)
        cli = Cli(coordinators, stack, timeout=COMMAND_TIMEOUT)
        yield LiveSite(stack=stack, cli=cli, web=web, db=db, coordinators=coordinators)
    finally:
        servers.close()
        coordinators.close()
        workers.kill_all()
        print(workers.logs_tail())  # shown by pytest when a test failed
        db.dispose()
