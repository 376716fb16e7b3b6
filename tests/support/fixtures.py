"""The harness's fixtures, registered for every test by the root conftest (`pytest_plugins`).

- `broker`: a Redis DB index private to the test module (`support.private_redis`),
  empty at the start and at the end of each test. Redis missing: skipped on a
  laptop, failed in CI.
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

import pytest

from .private_redis import PrivateRedis, private_redis
from .processes import Coordinators, WorkerPool


@pytest.fixture(scope="module")
def _module_redis(request: pytest.FixtureRequest) -> Iterator[PrivateRedis]:
    with private_redis(request.module.__name__) as private:
        yield private


@pytest.fixture
def broker(_module_redis: PrivateRedis) -> Iterator[PrivateRedis]:
    """The module's private Redis DB, empty at the start and the end of the test."""
    _module_redis.clear()
    yield _module_redis
    _module_redis.clear()


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
