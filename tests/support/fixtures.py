"""The harness's fixtures, registered for every test by the root conftest (`pytest_plugins`).

- `module_broker`: a Redis DB index private to the test module
  (`support.private_redis`), empty when taken. Redis missing: skipped on a
  laptop, failed in CI.
- `broker`: the module's Redis DB, empty at the start and at the end of each test.
- `rabbit`: a RabbitMQ vhost of the test's own (`support.private_rabbit`),
  deleted after it. RabbitMQ missing: skipped on a laptop, failed in CI.
- `any_broker`: the core end-to-end tests' broker, once per kind: the module's
  Redis DB (`broker`), then a RabbitMQ vhost of the test's own
  (`support.private_rabbit`; the run is marked `rabbitmq`). RabbitMQ missing:
  skipped on a laptop, failed in CI.
- `home`: the test's BACKFILL_HOME, not created: a command that must write
  nothing must leave it so.
- `workers`: a `WorkerPool` of the test; every worker it started is killed at
  teardown, and the tails of their logs are printed (shown when the test failed).
- `coordinators`: coordinator threads and `python -m backfill.cli` subprocesses
  of the test, all stopped at teardown.

Request the database fixture BEFORE `workers` / `coordinators`: fixtures are torn
down in reverse order, so processes die before their database is dropped.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pytest

from .private_rabbit import PrivateVhost, private_vhost
from .private_redis import PrivateRedis, private_redis
from .processes import Coordinators, WorkerPool


@pytest.fixture(scope="module")
def module_broker(request: pytest.FixtureRequest) -> Iterator[PrivateRedis]:
    """A Redis DB index private to the module, empty when taken, emptied at its end."""
    with private_redis(request.module.__name__) as private:
        yield private


@pytest.fixture
def broker(module_broker: PrivateRedis) -> Iterator[PrivateRedis]:
    """The module's private Redis DB, empty at the start and the end of the test."""
    module_broker.clear()
    yield module_broker
    module_broker.clear()


class PrivateBroker(Protocol):
    """What a test needs of its broker, Redis DB or RabbitMQ vhost alike."""

    @property
    def url(self) -> str: ...

    def queue_length(self, queue: str) -> int: ...

    def purge(self, queue: str) -> None: ...


@pytest.fixture(params=["redis", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
def any_broker(request: pytest.FixtureRequest) -> PrivateBroker:
    """The test's broker, once on Redis and once on RabbitMQ: for the core
    end-to-end tests only (each run starts real processes)."""
    return request.getfixturevalue("broker" if request.param == "redis" else "rabbit")


@pytest.fixture
def rabbit(request: pytest.FixtureRequest) -> Iterator[PrivateVhost]:
    """A RabbitMQ vhost of the test's own, deleted after it with all it holds."""
    with private_vhost(request.node.nodeid) as vhost:
        yield vhost


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """BACKFILL_HOME; not created: commands that must write nothing must leave it so."""
    return tmp_path / "home"


def _logs(tmp_path: Path) -> Path:
    logs = tmp_path / "logs"
    logs.mkdir(exist_ok=True)
    return logs


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[WorkerPool]:
    pool = WorkerPool(_logs(tmp_path))
    try:
        yield pool
    finally:
        pool.kill_all()
        print(pool.logs_tail())  # shown by pytest when the test failed


@pytest.fixture
def coordinators(tmp_path: Path) -> Iterator[Coordinators]:
    registry = Coordinators(_logs(tmp_path))
    try:
        yield registry
    finally:
        registry.close()
