"""Fixtures of the parity tests: Airflow 2's BackfillJob behaviours, end to end.

Built on the integration harness (`tests/integration/`: `Stack`, the ledger,
`WorkerPool`, `wait_until`), with one difference that keeps the suite fast:
the processes are shared by every test of a MODULE, not started per test.

- `stack` (module): a `ParityStack` on a fresh database of the module's own
  (a copy of the migrated template) on each backend the module lists in
  `BACKENDS` (default: PostgreSQL only), the module's private Redis DB index,
  the DAGs of `tests/dags_parity/` and one ledger file;
- `workers` (module): `celery -A workers worker -c 1` processes, started once
  for the module: `WORKERS` of the module (default 4) on `QUEUES` (default:
  the default queue);
- `cli` (test): `python -m backfill.cli ...` subprocesses (the real command
  line, whose coordinator drives the backfill); every one still alive at the
  end of the test is killed, and on failure its output and the workers' log
  tails are printed;
- `db` (module): an engine on the module's database, for the checks.

Tests of one module share the database, the broker and the workers, so each
test uses DAG ids (and pools) of its own and filters the ledger by DAG id.
Every process is killed, by its own process group, in teardown.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from support.private_redis import PrivateRedis, private_redis
from support.processes import WorkerPool, kill_group, tail
from support.stack import (
    PROJECT,
    Stack,
)

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
            callspec = getattr(item, "callspec", None)
            if callspec is not None and callspec.params.get("module_db_url") == "postgresql":
                item.add_marker(pytest.mark.postgres)  # `-m "not postgres"` deselects it


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


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # A module lists the backends it runs on in BACKENDS (default: PostgreSQL only).
    if "module_db_url" in metafunc.fixturenames:
        backends = getattr(metafunc.module, "BACKENDS", ("postgresql",))
        metafunc.parametrize("module_db_url", backends, indirect=True, scope="module")


@pytest.fixture(scope="module")
def module_db_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A freshly migrated database of the module's own, on the backend of its parameter."""
    if request.param == "sqlite":
        target = tmp_path_factory.mktemp("db") / "backfill.db"
        shutil.copyfile(request.getfixturevalue("_sqlite_template"), target)
        yield f"sqlite:///{target}"
        return
    admin: Engine = request.getfixturevalue("_pg_admin")
    template: str = request.getfixturevalue("_pg_template")
    name = f"backfill_parity_{uuid.uuid4().hex[:12]}"
    _admin(admin, f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        # FORCE: a leaked connection must not leak the database too.
        _admin(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _admin(admin: Engine, sql: str) -> None:
    with admin.connect() as conn:  # the admin engine is in AUTOCOMMIT
        conn.exec_driver_sql(sql)


@pytest.fixture(scope="module")
def module_redis() -> Iterator[PrivateRedis]:
    """A Redis DB index private to the module, emptied before and after it."""
    with private_redis("the parity tests") as private:
        private.clear()
        yield private


@pytest.fixture(scope="module")
def stack(
    module_db_url: str, module_redis: PrivateRedis, tmp_path_factory: pytest.TempPathFactory
) -> ParityStack:
    # No message of another backend's stack may reach this one's workers.
    module_redis.clear()
    folder = tmp_path_factory.mktemp("parity")
    return ParityStack.create(module_db_url, module_redis, folder)


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


@dataclass(frozen=True)
class Finished:
    """A `backfill ...` command that ended."""

    args: tuple[str, ...]
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    @property
    def log(self) -> str:
        """The command, its exit code and its output: the message of a failed assertion."""
        command = " ".join(self.args)
        return f"`backfill {command}` exited {self.code}\n{self.output}"


@dataclass
class Running:
    """A `backfill ...` subprocess, its stdout and stderr each in a file."""

    args: tuple[str, ...]
    process: subprocess.Popen[bytes]
    out: Path
    err: Path

    def wait(self, timeout: float = DRIVE_TIMEOUT) -> Finished:
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            command = " ".join(self.args)
            pytest.fail(f"`backfill {command}` still running after {timeout:g}s\n{tail(self.err)}")
        return Finished(self.args, code, self.out.read_text(), self.err.read_text())


class Cli:
    """`python -m backfill.cli ...` subprocesses of one test, killed at its end."""

    def __init__(self, stack: ParityStack, logs: Path) -> None:
        self.stack = stack
        self.logs = logs
        self.started: list[Running] = []

    def start(self, *args: str) -> Running:
        n = len(self.started)
        out, err = self.logs / f"cli-{n}-{args[0]}.out", self.logs / f"cli-{n}-{args[0]}.err"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-m", "backfill.cli", *args],
                env=self.stack.env(),
                cwd=PROJECT,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,  # no terminal signal reaches it by accident
            )
        self.started.append(Running(args, process, out, err))
        return self.started[-1]

    def __call__(self, *args: str, timeout: float = DRIVE_TIMEOUT) -> Finished:
        """Run `backfill ARGS...` to its end."""
        return self.start(*args).wait(timeout)

    def close(self) -> None:
        for running in self.started:
            kill_group(running.process)
            print(tail(running.out), tail(running.err), sep="\n")  # shown when the test failed


@pytest.fixture
def cli(stack: ParityStack, workers: WorkerPool, tmp_path: Path) -> Iterator[Cli]:
    """The command line, with the module's workers up (requested for their side effect)."""
    runner = Cli(stack, tmp_path)
    try:
        yield runner
    finally:
        runner.close()
        print(workers.logs_tail())
