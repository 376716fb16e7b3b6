"""Fixtures of the integration tests: real Redis, real `celery worker`
processes, real coordinators, and an execution ledger (see `stack.py`,
`processes.py`, `checks.py`).

- `broker`: a Redis DB index private to the test module, empty at the start
  and end of each test. Redis missing: skipped on a laptop, failed in CI.
- `pg_stack` / `stack`: a `Stack` on a fresh PostgreSQL database (`pg_url`) /
  on a fresh database of each backend (`db_url`).
- `workers`, `coordinators`: every process they start is killed at teardown.
- `engine_of(stack)`: an engine on the stack's database, disposed at teardown.
- `postgres_server`, `redis_server`: private servers a test may stop and
  restart (`servers.py`), destroyed at teardown.

Request the stack fixture BEFORE `workers` / `coordinators`: fixtures are torn
down in reverse order, so processes die before their database is dropped.
Every test here is marked `slow` (it starts processes); all run in CI.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from support.private_redis import PrivateRedis, private_redis

from backfill.store.db import create_engine_for

from .processes import Coordinators, WorkerPool
from .servers import postgres_server, redis_server
from .stack import Stack

HERE = Path(__file__).parent
__all__ = ["postgres_server", "redis_server"]  # fixtures defined in servers.py


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: starts real worker processes (seconds, not ms)")
    config.addinivalue_line("markers", "storm: a round of the connection storm (`make stress`)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(item.path).parents:
            item.add_marker(pytest.mark.slow)


# Storm rounds by driver: [passed, ran]. `make stress` reads the summary line.
_STORM: dict[str, list[int]] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "storm" not in report.keywords or not (report.when == "call" or report.failed):
        return
    driver = report.nodeid.rsplit("-", 1)[-1].rstrip("]")
    tally = _STORM.setdefault(driver, [0, 0])
    tally[0] += report.passed
    tally[1] += 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _STORM:
        return
    passed, ran = (sum(t[i] for t in _STORM.values()) for i in (0, 1))
    each = ", ".join(f"{driver} {p}/{n}" for driver, (p, n) in sorted(_STORM.items()))
    terminalreporter.write_line(f"connection storm: {passed}/{ran} rounds passed ({each})")


@pytest.fixture(scope="module")
def _redis_db() -> Iterator[PrivateRedis]:
    with private_redis("the integration tests") as private:
        yield private


@pytest.fixture
def broker(_redis_db: PrivateRedis) -> Iterator[PrivateRedis]:
    """The module's private Redis DB, empty at the start and the end of the test."""
    _redis_db.clear()
    yield _redis_db
    _redis_db.clear()


@pytest.fixture
def pg_stack(pg_url: str, broker: PrivateRedis, tmp_path: Path) -> Stack:
    """A Stack on a fresh PostgreSQL database and the module's Redis DB."""
    return Stack.create(pg_url, broker, tmp_path)


@pytest.fixture
def stack(db_url: str, broker: PrivateRedis, tmp_path: Path) -> Stack:
    """A Stack on a fresh database of each backend (SQLite, PostgreSQL) and Redis."""
    return Stack.create(db_url, broker, tmp_path)


@pytest.fixture
def engine_of() -> Iterator[Callable[[Stack], Engine]]:
    made: list[Engine] = []

    def make(stack: Stack) -> Engine:
        made.append(create_engine_for(stack.db_url))
        return made[-1]

    yield make
    for engine in made:
        engine.dispose()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[WorkerPool]:
    logs = tmp_path / "logs"
    logs.mkdir(exist_ok=True)
    pool = WorkerPool(logs)
    try:
        yield pool
    finally:
        pool.kill_all()
        print(pool.logs_tail())  # shown by pytest when the test failed


@pytest.fixture
def coordinators(tmp_path: Path) -> Iterator[Coordinators]:
    logs = tmp_path / "logs"
    logs.mkdir(exist_ok=True)
    registry = Coordinators(logs)
    try:
        yield registry
    finally:
        registry.close()
