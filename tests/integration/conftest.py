"""Fixtures of the integration tests: real Redis, real `celery worker`
processes, real coordinators, and an execution ledger (the harness in
`tests/support/`: `broker`, `workers` and `coordinators` are root fixtures;
the checks in `checks.py`).

- `pg_stack` / `stack`: a `Stack` on a fresh PostgreSQL database (`pg_url`) /
  on a fresh database of each backend (`db_url`).
- `core_stack`: a `Stack` on a fresh PostgreSQL database and each broker
  (`any_broker`: Redis, then RabbitMQ), for the core end-to-end tests only.
- `engine_of(stack)`: an engine on the stack's database, disposed at teardown.
- `proxy`: a started `PgProxy` (`pgproxy.py`), stopped at teardown.
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
from support.fixtures import PrivateBroker
from support.private_redis import PrivateRedis
from support.stack import Stack

from backfill.store.db import create_engine_for

from .pgproxy import PgProxy
from .servers import postgres_server, redis_server

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


@pytest.fixture
def pg_stack(pg_url: str, broker: PrivateRedis, tmp_path: Path) -> Stack:
    """A Stack on a fresh PostgreSQL database and the module's Redis DB."""
    return Stack.create(pg_url, broker, tmp_path)


@pytest.fixture
def core_stack(pg_url: str, any_broker: PrivateBroker, tmp_path: Path) -> Stack:
    """A Stack on a fresh PostgreSQL database and each broker, Redis then RabbitMQ."""
    return Stack.create(pg_url, None, tmp_path).with_broker(any_broker.url)


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
def proxy() -> Iterator[PgProxy]:
    with PgProxy() as started:
        yield started
