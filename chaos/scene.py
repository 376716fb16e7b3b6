"""The stage of one row of the fault matrix: its own database, broker, DAGs and processes.

`open_scene` makes, for one row, a PostgreSQL database of its own on the shared
server (`CREATE DATABASE ... TEMPLATE` of a migrated template, made once per
run), a private Redis DB (`support.private_redis`) unless the row brings its
own broker, a `support.stack.Stack` on the chaos DAGs (tests/dags_chaos), a
`support.processes.WorkerPool` and `Coordinators`. Everything is given back on
leaving the `with` block, failed row or not, processes first (an `ExitStack`):
workers and coordinators killed by process group, the database dropped WITH
(FORCE), the Redis DB emptied.

Invariants:
- a row never touches another row's database, Redis DB or processes;
- times are `time.monotonic()`; a row's clock starts at `launch()` (its
  coordinator starts driving) and stops when the backfill reaches a final state.
"""

from __future__ import annotations

import contextlib
import io
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import sqlalchemy as sa
from integration.checks import create_backfill
from integration.servers import Startable
from sqlalchemy.engine import Engine, make_url
from support.netns import Host
from support.private_redis import private_redis
from support.processes import Coordinators, Worker, WorkerPool
from support.stack import PROJECT, Stack
from support.waiting import wait_until

from backfill.model.states import BackfillState
from backfill.planning.run_options import FailurePolicy, RunOptions
from backfill.store.db import create_engine_for, migrate
from backfill.store.schema import backfills, dag_runs, task_instances

from .settings import PG_ADMIN_URL, START, Size

DAGS = PROJECT / "tests" / "dags_chaos"
FINAL = (BackfillState.SUCCESS.value, BackfillState.FAILED.value)  # a backfill's final states
S = TypeVar("S", bound=Startable)
EVERY_RUN = RunOptions(on_failure=FailurePolicy.CONTINUE)


def admin_engine(url: str = PG_ADMIN_URL) -> Engine:
    """An AUTOCOMMIT engine: CREATE / DROP DATABASE refuse a transaction."""
    return create_engine_for(url).execution_options(isolation_level="AUTOCOMMIT")


def _admin(sql: str, url: str = PG_ADMIN_URL) -> None:
    engine = admin_engine(url)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(sql)
    finally:
        engine.dispose()


@dataclass
class Template:
    """A migrated database on the shared server that each row's database copies."""

    name: str = field(default_factory=lambda: f"chaos_tmpl_{uuid.uuid4().hex[:10]}")
    made: bool = False

    def copy(self) -> tuple[str, str]:
        """A fresh database copied from the template (made on first use): name, URL."""
        if not self.made:
            _admin(f'CREATE DATABASE "{self.name}"')
            self.made = True
            engine = create_engine_for(_url_of(self.name))
            migrate(engine)
            engine.dispose()  # a template must have no open connection when copied
        name = f"chaos_{uuid.uuid4().hex[:12]}"
        _admin(f'CREATE DATABASE "{name}" TEMPLATE "{self.name}"')
        return name, _url_of(name)

    def drop(self) -> None:
        if self.made:
            _admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def _url_of(database: str) -> str:
    return make_url(PG_ADMIN_URL).set(database=database).render_as_string(hide_password=False)


def drop_database(name: str) -> None:
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Scene:
    """One row's stack, engine, workers and coordinators, and its clock."""

    def __init__(self, stack: Stack, size: Size, exits: ExitStack, logs: Path) -> None:
        self.stack, self.size, self.logs = stack, size, logs
        self.engine = create_engine_for(stack.db_url)
        exits.callback(self.engine.dispose)
        self.workers = WorkerPool(logs)
        self.coordinators = Coordinators(logs)
        exits.callback(self.workers.kill_all)
        exits.callback(_quietly, self.coordinators.close)  # it prints every CLI's output
        self.launched: float | None = None

    def start_workers(
        self,
        count: int,
        *,
        concurrency: int = 3,
        app: str = "workers",
        env: Mapping[str, str] | None = None,
        host: Host | None = None,
    ) -> list[Worker]:
        """`count` real `celery -A app worker` processes (with `env` over the stack's, in
        `host`'s namespace if given), each ready; killed with the scene."""
        return self.workers.start(
            self.stack, count, concurrency=concurrency, app=app, env=env, host=host
        )

    def create(self, dag_id: str) -> int:
        """A backfill of `dag_id` over the row's dates, planned as `backfill create
        --continue-on-failures` does: every run runs even after a failure, so that "TIs
        lost" counts each TI a fault harmed, not the runs a stopped backfill never began."""
        dag = self.stack.dag(dag_id)
        return create_backfill(self.engine, dag, START, self.size.end, EVERY_RUN)

    def launch(self) -> None:
        """The row's clock starts: a coordinator is about to drive."""
        self.launched = time.monotonic()

    def states(self, backfill_id: int) -> dict[str, int]:
        """How many TIs of the backfill are in each state now."""
        ti, run = task_instances, dag_runs
        stmt = (
            sa.select(ti.c.state, sa.func.count())
            .join(run, run.c.id == ti.c.dag_run_id)
            .where(run.c.backfill_id == backfill_id)
            .group_by(ti.c.state)
        )
        with self.engine.connect() as conn:
            return {str(state): int(n) for state, n in conn.execute(stmt)}

    def wait_done(self, backfill_id: int, share: float, *, timeout: float = 240.0) -> None:
        """Until `share` of the backfill's TIs succeeded, with some running: mid-run."""

        def under_way() -> bool:
            states = self.states(backfill_id)
            total = sum(states.values())
            return states.get("success", 0) >= share * total and bool(states.get("running"))

        wait_until(under_way, timeout=timeout, what=f"{share:.0%} of the TIs to succeed")

    def backfill_state(self, backfill_id: int) -> str:
        with self.engine.connect() as conn:
            stmt = sa.select(backfills.c.state).where(backfills.c.id == backfill_id)
            return str(conn.execute(stmt).scalar_one())

    def await_final(self, backfill_id: int, deadline: float) -> float | None:
        """Seconds from launch to the backfill's final state; None if `deadline` (seconds
        from launch) passed first."""
        assert self.launched is not None, "launch() the row before awaiting its end"
        while True:
            if self.backfill_state(backfill_id) in FINAL:
                return time.monotonic() - self.launched
            if time.monotonic() - self.launched > deadline:
                return None
            time.sleep(0.25)


def _quietly(close: Callable[[], None]) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        close()


@contextlib.contextmanager
def open_scene(
    name: str,
    size: Size,
    template: Template,
    folder: Path,
    *,
    broker: str | None = None,
    db_url: str | None = None,
) -> Iterator[tuple[Scene, ExitStack]]:
    """A scene for row `name` under `folder`, on a fresh database (or `db_url`, which the
    row made and gives back) and a private Redis DB (or `broker`); every process,
    database and Redis key given back on exit."""
    with ExitStack() as exits:
        url = db_url
        if url is None:
            database, url = template.copy()
            exits.callback(drop_database, database)
        root = folder / name
        root.mkdir(parents=True)
        logs = root / "logs"
        logs.mkdir()
        private = None
        if broker is None:
            private = exits.enter_context(private_redis(f"chaos row {name}"))
        stack = Stack.create(url, private, root).with_dags(DAGS)
        if broker is not None:
            stack = stack.with_broker(broker)
        yield Scene(stack, size, exits, logs), exits


@contextlib.contextmanager
def private_server(make: Callable[[], S]) -> Iterator[S]:
    """A started private server (`integration.servers`), destroyed after, quietly."""
    server = make()
    try:
        server.start()
        yield server
    finally:
        server.destroy()
