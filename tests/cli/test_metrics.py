"""Prometheus metrics of `backfill run` and `backfill coordinator --metrics-port P`
(DESIGN section 6, Metrics), scraped over real HTTP and parsed by prometheus_client.

What must hold: while a backfill is driven, `/metrics` serves the TI gauge as the
database has it at that moment (every state, zeros included), the counters and
histograms the coordinator recorded (dispatches, passes, the lag of every claim),
and the refusals of the fence from `refused_writes`; the port is released when the
command ends; a port in use is bad input (exit 2, nothing written).
"""

from __future__ import annotations

import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pendulum
import pytest
import sqlalchemy as sa
from support.cli import assert_user_error, invoke
from support.harness import Harness, embedded_harness
from support.private_redis import PrivateRedis
from support.processes import Cli, Coordinators, WorkerPool
from support.scrape import Scrape, free_port, port_is_free, scrape
from support.stack import Stack
from support.waiting import wait_until

from backfill.broker.app import make_celery
from backfill.engine.dispatch import Dispatcher
from backfill.messages import TaskMessage
from backfill.model.states import TIState
from backfill.store import claims, reads, status
from backfill.store.db import create_engine_for
from backfill.store.schema import RefusalKind, task_instances

GATED_DAG = """
import os, time
from pathlib import Path
import pendulum
from backfill import DAG, Context

dag = DAG("gated", schedule="@daily", start_date=pendulum.datetime(2024, 1, 1, tz="UTC"))


def _wait(name: str) -> None:
    gate, deadline = Path(os.environ["METRICS_TEST_GATES"]) / name, time.monotonic() + 120
    while not gate.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {name} was never opened")
        time.sleep(0.05)


@dag.task
def first(ctx: Context) -> None:
    pass


@dag.task
def held(ctx: Context) -> None:
    _wait("held")


@dag.task
def last(ctx: Context) -> None:
    _wait("last")


first >> held >> last
"""

PAIR_DAG = """
import pendulum
from backfill import DAG, Context

dag = DAG("pair", schedule="@daily", start_date=pendulum.datetime(2024, 1, 1, tz="UTC"))


@dag.task
def a(ctx: Context) -> None:
    pass


@dag.task
def b(ctx: Context) -> None:
    pass
"""

LOST_KINDS = {kind.value for kind in RefusalKind}


def scraped(
    port: int, what: str, ready: Callable[[Scrape], bool], alive: Callable[[], str]
) -> Scrape:
    """The first scrape that is `ready`; fails if the command exits first (`alive`: why)."""

    def attempt() -> Scrape | None:
        if why := alive():
            pytest.fail(why)
        found = scrape(port)
        return found if found is not None and ready(found) else None

    return wait_until(attempt, timeout=90, what=what)


def gauge_as_in_db(found: Scrape, summary: status.Summary) -> None:
    """The scraped TI gauge of the backfill is the database's count of every state."""
    expected = {state.value: float(summary.task_instances.get(state, 0)) for state in TIState}
    assert found.states(summary.id) == expected


def lost(found: Scrape) -> dict[str, float]:
    return {
        kind: found.value("backfill_claims_lost_total", kind=kind) for kind in sorted(LOST_KINDS)
    }


# --- backfill run, on the embedded default ------------------------------------------------


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    with embedded_harness(tmp_path) as harness:
        (harness.dags / "gated_dag.py").write_text(GATED_DAG)
        (harness.dags / "pair_dag.py").write_text(PAIR_DAG)
        harness.env["METRICS_TEST_GATES"] = str(tmp_path)
        yield harness


def _exited(run: subprocess.Popen[str]) -> Callable[[], str]:
    def why() -> str:
        if run.poll() is None:
            return ""
        _, err = run.communicate()
        return f"`backfill run` exited {run.returncode} before the scrape\n{err}"

    return why


def test_run_serves_the_metrics_of_its_backfill_while_it_drives(h: Harness, tmp_path: Path) -> None:
    port = free_port()
    run = h.popen(
        "run", "gated", "-s", "2024-01-01", "-e", "2024-01-01",
        "--local-workers", "1", "--metrics-port", str(port),
    )  # fmt: skip

    def states(found: Scrape, **expected: float) -> bool:
        return all(found.states(1).get(s) == n for s, n in expected.items())

    def lags(found: Scrape) -> float:
        return found.value("backfill_dispatch_lag_seconds_count", dag_id="gated")

    # `first` succeeded, `held` runs until its gate opens: nothing moves meanwhile.
    mid = scraped(
        port,
        "`held` running and two claims observed",
        lambda s: states(s, success=1, running=1) and lags(s) == 2,
        _exited(run),
    )
    gauge_as_in_db(mid, h.summary(1))
    assert mid.states(1)["none"] == 1  # `last`, and every other state is there at 0
    sent = mid.value("backfill_dispatched_total", dag_id="gated")
    assert sent - mid.value("backfill_redispatched_total", dag_id="gated") == 2
    assert mid.value("backfill_reaped_total", dag_id="gated") == 0
    assert mid.value("backfill_pass_duration_seconds_count", dag_id="gated") > 0
    assert mid.value("backfill_pass_duration_seconds_bucket", dag_id="gated", le="+Inf") > 0
    assert 0 <= mid.value("backfill_dispatch_lag_seconds_sum", dag_id="gated") < 60
    assert lost(mid) == dict.fromkeys(sorted(LOST_KINDS), 0.0)
    assert mid.value("backfill_database_up") == 1
    assert not port_is_free(port)  # (the check after the exit can fail)

    (tmp_path / "held").touch()
    later = scraped(
        port,
        "`last` running and three claims observed",
        lambda s: states(s, success=2, running=1) and lags(s) == 3,
        _exited(run),
    )
    gauge_as_in_db(later, h.summary(1))
    assert later.value("backfill_pass_duration_seconds_count", dag_id="gated") > mid.value(
        "backfill_pass_duration_seconds_count", dag_id="gated"
    )

    (tmp_path / "last").touch()
    _, err = run.communicate(timeout=120)
    assert run.returncode == 0, err
    assert f"serving metrics at http://127.0.0.1:{port}/metrics" in err
    assert h.summary(1).task_instances == {"success": 3}
    assert port_is_free(port)  # released on exit


# --- bad input: nothing written ------------------------------------------------------------


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port another process listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize(
    "command", [("run", "pair", "-s", "2024-01-01", "-e", "2024-01-01"), ("coordinator",)]
)
def test_a_port_in_use_is_refused_before_anything_is_written(
    h: Harness, busy_port: int, command: tuple[str, ...]
) -> None:
    done = invoke(h.home, *command, "--metrics-port", str(busy_port), dags=h.dags)
    assert_user_error(done, f"--metrics-port {busy_port}", "already in use", "pick a free port")
    assert not h.home.exists()


def test_a_host_that_cannot_be_listened_on_or_without_a_port_is_refused(h: Harness) -> None:
    port = str(free_port())
    unusable = invoke(h.home, "coordinator", "--metrics-port", port, "--metrics-host", "192.0.2.1")
    assert_user_error(unusable, f"cannot serve metrics on 192.0.2.1:{port}", "--metrics-host")
    alone = invoke(h.home, "coordinator", "--metrics-host", "0.0.0.0")
    assert_user_error(alone, "--metrics-host needs --metrics-port")
    out_of_range = invoke(h.home, "coordinator", "--metrics-port", "0")
    assert out_of_range.exit_code == 2
    assert not h.home.exists()


# --- backfill coordinator, on PostgreSQL and Redis ------------------------------------------


def _duplicate(stack: Stack, engine: sa.Engine, task_id: str) -> None:
    """Deliver try 1 of `task_id` again, as a broker may: its claim is refused."""
    with reads.reading(engine) as conn:
        ti_id = conn.execute(
            sa.select(task_instances.c.id).where(task_instances.c.task_id == task_id)
        ).scalar_one()
    message = TaskMessage(
        ti_id=ti_id,
        try_number=1,
        backfill_id=1,
        dag_id="pair",
        task_id=task_id,
        logical_date="2024-01-01T00:00:00+00:00",
    )
    dispatcher = Dispatcher(make_celery(stack.settings()))
    try:
        dispatcher.publish([(message, "default")])
    finally:
        dispatcher.close()


def test_coordinator_serves_the_gauge_and_refusals_from_postgresql(
    pg_url: str,
    broker: PrivateRedis,
    tmp_path: Path,
    workers: WorkerPool,
    coordinators: Coordinators,
) -> None:
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "pair_dag.py").write_text(PAIR_DAG)
    stack = Stack.create(pg_url, broker, tmp_path).with_dags(dags)
    cli = Cli(coordinators, stack, timeout=60)
    port = free_port()
    service = cli.start("coordinator", "--metrics-port", str(port))

    def alive() -> str:
        code = service.process.poll()
        return "" if code is None else f"the coordinator exited {code}\n{service.tails()}"

    idle = scraped(port, "the coordinator to serve", lambda s: s.has("backfill_database_up"), alive)
    assert idle.value("backfill_database_up") == 1
    assert not idle.has("backfill_task_instances")  # no backfill yet
    assert lost(idle) == dict.fromkeys(sorted(LOST_KINDS), 0.0)

    created = cli("create", "pair", "-s", "2024-01-01", "-e", "2024-01-01")
    assert created.code == 0, created.log
    engine = create_engine_for(pg_url)
    try:
        # No worker yet: the coordinator queued both TIs and published their messages.
        queued = scraped(
            port,
            "both TIs queued and dispatched",
            lambda s: (
                s.states(1).get("queued") == 2
                and s.value("backfill_dispatched_total", dag_id="pair") == 2
            ),
            alive,
        )
        gauge_as_in_db(queued, _summary(engine))
        assert queued.value("backfill_dispatch_lag_seconds_count", dag_id="pair") == 0

        workers.start(stack, 1)
        done = scraped(
            port,
            "both TIs succeeded and their claims observed",
            lambda s: (
                s.states(1).get("success") == 2
                and s.value("backfill_dispatch_lag_seconds_count", dag_id="pair") == 2
            ),
            alive,
        )
        gauge_as_in_db(done, _summary(engine))  # ended, and still listed

        _duplicate(stack, engine, "a")  # the worker's claim is refused: a `claim` row
        with engine.begin() as conn:  # a finish refused, written as a worker does
            ti_id = conn.execute(sa.select(sa.func.min(task_instances.c.id))).scalar_one()
            claims.refuse(
                conn,
                ti_id=ti_id,
                try_number=1,
                kind=RefusalKind.FINISH,
                claimant="elsewhere:1",
                now=pendulum.now("UTC"),
            )
        refused = scraped(
            port,
            "the refusals counted",
            lambda s: lost(s) == {"claim": 1.0, "finish": 1.0, "heartbeat": 0.0},
            alive,
        )
        assert refused.value("backfill_dispatched_total", dag_id="pair") == 2
    finally:
        engine.dispose()

    service.process.send_signal(signal.SIGTERM)
    assert service.wait(timeout=60) == 0, service.tails()
    assert port_is_free(port)


def _summary(engine: sa.Engine) -> status.Summary:
    with reads.reading(engine) as conn:
        found = status.summary(conn, 1)
    assert found is not None
    return found
