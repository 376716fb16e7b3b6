"""Fixtures of the parity tests: Airflow 2's BackfillJob behaviours, end to end.

Built on the one harness (`tests/support/`: `Stack`, the ledger, `WorkerPool`,
`Coordinators`, `wait_until`), with one difference that keeps the suite fast:
the workers are shared by every test of a MODULE, not started per test.

- `stack` (module): a `ParityStack` on the root `module_db_url` (a fresh
  database of the module's own) on each backend the module lists in
  `BACKENDS` (default: PostgreSQL only), the module's private Redis DB index
  (`module_broker`),
  the DAGs of `tests/dags_parity/` and one ledger file;
- `workers` (module): `celery -A workers worker -c 1` processes, started once
  for the module: `WORKERS` of the module (default 4) on `QUEUES` (default:
  the default queue);
- `cli` (test): `support.processes.Cli`, `python -m backfill.cli ...`
  subprocesses (the real command line, whose coordinator drives the backfill)
  of the root `coordinators`: every one still alive at the end of the test is
  killed, and on failure its output and the workers' log tails are printed;
- `db` (module): an engine on the module's database, for the checks.

Tests of one module share the database, the broker and the workers, so each
test uses DAG ids (and pools) of its own and filters the ledger by DAG id.
Every process is killed, by its own process group, in teardown.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from support.private_redis import PrivateRedis
from support.processes import Cli, Coordinators, WorkerPool
from support.stack import PROJECT, Stack

from backfill.store.db import create_engine_for

HERE = Path(__file__).parent
DAGS = PROJECT / "tests" / "dags_parity"
DRIVE_TIMEOUT = 90.0  # seconds a backfill of these tests may take; they take a few


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: starts real worker processes (seconds, not ms)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(item.path).parents:
            item.add_marker(pytest.mark.slow)  # starts real processes


@dataclass(frozen=True)
class ParityStack(Stack):
    """The `Stack`, on the parity DAGs folder, with the switches of its DAGs."""

    dags: Path = DAGS

    def switch_on(self, name: str) -> None:
        """Create control file `name` (see tests/dags_parity/_parity.py `switched`)."""
        (self.gates / name).touch()

    def switch_off(self, name: str) -> None:
        (self.gates / name).unlink(missing_ok=True)


# --- database and broker, one per module -------------------------------------------------


@pytest.fixture(scope="module")
def stack(
    module_db_url: str, module_broker: PrivateRedis, tmp_path_factory: pytest.TempPathFactory
) -> ParityStack:
    # No message of another backend's stack may reach this one's workers.
    module_broker.clear()
    folder = tmp_path_factory.mktemp("parity")
    return ParityStack.create(module_db_url, module_broker, folder)


@pytest.fixture(scope="module")
def db(stack: ParityStack) -> Iterator[Engine]:
    engine = create_engine_for(stack.db_url)
    yield engine
    engine.dispose()


# --- workers, one pool per module --------------------------------------------------------


@pytest.fixture(scope="module")
def workers(
    stack: ParityStack, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerPool]:
    pool = WorkerPool(tmp_path_factory.mktemp("worker-logs"))
    try:
        count = getattr(request.module, "WORKERS", 4)
        pool.start(stack, count, queues=getattr(request.module, "QUEUES", None))
        yield pool
    finally:
        pool.kill_all()


# --- the command line --------------------------------------------------------------------


@pytest.fixture
def cli(stack: ParityStack, workers: WorkerPool, coordinators: Coordinators) -> Iterator[Cli]:
    """The command line, with the module's workers up (requested for their side effect)."""
    yield Cli(coordinators, stack, timeout=DRIVE_TIMEOUT)
    print(workers.logs_tail())  # shown by pytest when the test failed
