"""Task and run callbacks on real `celery worker` processes and a real `backfill run`.

The DAGs are tests/dags_integration/callbacks.py; every callback records its event
in the ledger. On each backend (SQLite, PostgreSQL), one worker:
- each callback fires exactly once per event: a task's success, its retry, its
  failure; a run's success and failure (with Airflow's `reason`), in the
  coordinator; none for an upstream_failed TI (no worker ran it);
- a callback that raises is logged with its key, the next one still runs, and the
  outcome stands;
- FENCED: a try whose claim is lost while it runs (`cancel --abort`) runs no
  callback, and neither does its run, failed by the cancel; cleared while it
  runs, it runs none, and the try that runs again does;
- HA (PostgreSQL): two `backfill coordinator` daemons, the driver SIGKILLed
  after one run ended: each run's callback fired exactly once, the later ones
  by the daemon that took over.
The unit tests are tests/unit/test_callbacks.py; the run callbacks' passes (deadlock,
runs that never started, a second coordinator) are in tests/store/test_passes.py.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Callable

from sqlalchemy.engine import Engine
from support.processes import Coordinators, WorkerPool
from support.stack import Stack, utc
from support.waiting import wait_until

from .checks import backfill_row

DAY = "2024-01-01"
CALLBACK_PATIENCE = 30.0  # seconds a callback may take to be recorded after the state it follows


def callbacks(stack: Stack, dag_id: str) -> Counter[tuple[str, str, str, int]]:
    """(event, task_id, ds, try_number) -> how many times, of `dag_id`'s callbacks."""
    return Counter(
        (e.event, e.task_id, e.ds, e.try_number)
        for e in stack.ledger.entries()
        if e.dag_id == dag_id and e.event.startswith("cb:")
    )


def settled(stack: Stack, dag_id: str, total: int) -> Counter[tuple[str, str, str, int]]:
    """`callbacks` once `total` of them have fired (the caller compares them whole): a
    callback runs after the commit the test saw, in a worker or a daemon that may not
    have been scheduled since."""
    wait_until(
        lambda: callbacks(stack, dag_id).total() >= total,
        timeout=CALLBACK_PATIENCE,
        what=f"{total} callbacks of {dag_id}",
    )
    return callbacks(stack, dag_id)


def logs(workers: WorkerPool) -> str:
    """Everything the workers logged."""
    return "\n".join(w.output() for w in workers.started)


def test_each_callback_fires_once_per_event_and_one_that_raises_changes_nothing(
    stack: Stack, workers: WorkerPool, coordinators: Coordinators
) -> None:
    workers.start(stack, 1)
    ok = coordinators.cli(stack, "run", "callbacks_ok", "-s", DAY, "-e", "2024-01-02")
    finished = ok.finish(timeout=90)
    assert finished.code == 0, finished.output  # second's broken callback failed nothing
    days = ("2024-01-01", "2024-01-02")
    expected = Counter(
        {
            **{("cb:task_success", task, ds, 1): 1 for task in ("first", "second") for ds in days},
            **{("cb:read", "second", ds, 1): 1 for ds in days},
            # the run's: the context of its last task, as Airflow's
            **{("cb:run_success", "second", ds, 1): 1 for ds in days},
        }
    )
    assert settled(stack, "callbacks_ok", expected.total()) == expected
    reads = {e.ds: e.extra["first"] for e in stack.ledger.entries("cb:read")}
    assert reads == {ds: f"first of {ds}" for ds in days}  # ctx.result works in a callback
    run_success = stack.ledger.entries("cb:run_success")
    assert {e.extra["reason"] for e in run_success} == {"success"}

    fail = coordinators.cli(stack, "run", "callbacks_fail", "-s", DAY, "-e", DAY)
    finished = fail.finish(timeout=90)
    assert finished.code == 1, finished.output
    expected = Counter(
        {
            ("cb:task_retry", "flaky", DAY, 1): 1,
            ("cb:task_failure", "flaky", DAY, 2): 1,
            # downstream ended upstream_failed without running: no callback (as Airflow)
            ("cb:run_failure", "downstream", DAY, 0): 1,  # after `broken` raised
        }
    )
    assert settled(stack, "callbacks_fail", expected.total()) == expected
    (retry,) = stack.ledger.entries("cb:task_retry")
    assert retry.extra["exception"] == "ValueError: try 1 fails"
    (run_failure,) = stack.ledger.entries("cb:run_failure")
    assert run_failure.extra["reason"] == "task_failure"
    # The raising callbacks were logged with their key, by the worker and the coordinator.
    wait_until(
        lambda: "callbacks_ok/second/" in logs(workers),
        timeout=10,
        what="the worker to log the raising callback",
    )
    assert "on_success_callback" in logs(workers)
    assert "raised; the outcome stands" in logs(workers)
    assert "RuntimeError: the pager is down" in logs(workers)
    assert "raised; the outcome stands" in finished.output


def test_a_try_that_lost_its_claim_runs_no_callback(
    stack: Stack, workers: WorkerPool, coordinators: Coordinators
) -> None:
    workers.start(stack, 1)
    run = coordinators.cli(stack, "run", "callbacks_fenced", "-s", DAY, "-e", DAY)
    wait_until(
        lambda: stack.ledger.events("held", "start"),
        timeout=60,
        what="the held try to start",
    )
    cancel = coordinators.cli(stack, "cancel", "1", "--abort").finish(timeout=60)
    assert cancel.code == 0, cancel.output
    finished = run.finish(timeout=90)
    assert finished.code == 1, finished.output  # cancelled
    wait_until(
        lambda: "claim lost; outcome" in logs(workers),
        timeout=30,
        what="the worker to finish the stopped try and be refused",
        explain=workers.logs_tail,
    )
    assert not stack.ledger.events("held", "end")  # stopped inside the callable
    assert callbacks(stack, "callbacks_fenced") == Counter()  # neither the try's nor the run's


def test_a_try_cleared_while_running_runs_no_callback_and_its_rerun_does(
    stack: Stack, workers: WorkerPool, coordinators: Coordinators
) -> None:
    workers.start(stack, 1)
    run = coordinators.cli(stack, "run", "callbacks_fenced", "-s", DAY, "-e", DAY)
    wait_until(lambda: stack.ledger.events("held", "start"), timeout=60, what="try 1 to start")
    stack.open_gate(("callbacks_fenced", "held", utc(DAY), 2))  # the rerun goes through
    cleared = coordinators.cli(stack, "clear", "1", "--yes").finish(timeout=60)
    assert cleared.code == 0, cleared.output
    finished = run.finish(timeout=90)
    assert finished.code == 0, finished.output  # the same drive ran try 2 to success
    assert [e.try_number for e in stack.ledger.events("held", "end")] == [2]
    wait_until(  # try 1 ended, and its finish was refused
        lambda: "claim lost; outcome" in logs(workers),
        timeout=30,
        what="the worker to finish the stopped try 1 and be refused",
    )
    expected = Counter(
        {("cb:task_success", "held", DAY, 2): 1, ("cb:run_success", "held", DAY, 2): 1}
    )
    assert settled(stack, "callbacks_fenced", expected.total()) == expected


HA_TIMEOUTS = {"heartbeat_interval": 1.0, "heartbeat_timeout": 6.0, "queued_timeout": 5.0}
HA_DAYS = ("2024-01-01", "2024-01-02", "2024-01-03")


def test_run_callbacks_fire_once_each_across_daemons_and_a_killed_driver(
    pg_stack: Stack,
    engine_of: Callable[[Stack], Engine],
    workers: WorkerPool,
    coordinators: Coordinators,
) -> None:
    stack = pg_stack.with_timeouts(**HA_TIMEOUTS)
    engine = engine_of(stack)
    workers.start(stack, 1, concurrency=3)
    daemons = [coordinators.cli(stack, "coordinator") for _ in range(2)]
    args = ["create", "callbacks_ha", "-s", HA_DAYS[0], "-e", HA_DAYS[-1]]
    created = coordinators.cli(stack, *args).finish(60)
    assert created.code == 0, created.output
    backfill_id = int(created.stdout)
    wait_until(
        lambda: len(stack.ledger.events("held", "start")) == len(HA_DAYS),
        timeout=90,
        what="every run's held try to start",
        explain=lambda: "\n".join(d.tails() for d in daemons),
    )
    stack.open_gate(("callbacks_ha", "held", utc(HA_DAYS[0]), 1))
    wait_until(
        lambda: stack.ledger.entries("cb:run_success"),
        timeout=60,
        what="the first run to end and its callback to fire",
    )
    owner = backfill_row(engine, backfill_id).lease_owner
    [driver] = [d for d in daemons if d.process.pid == int(owner.split(":")[1])]
    [survivor] = [d for d in daemons if d is not driver]
    os.killpg(driver.process.pid, signal.SIGKILL)
    for day in HA_DAYS[1:]:
        stack.open_gate(("callbacks_ha", "held", utc(day), 1))
    wait_until(
        lambda: backfill_row(engine, backfill_id).state == "success",
        timeout=stack.heartbeat_timeout + 90,
        what="the surviving daemon to take over and end the backfill",
        explain=survivor.tails,
    )
    # The last run's callback fires after the commit that ended the backfill too.
    settled(stack, "callbacks_ha", 2 * len(HA_DAYS))  # each run's and its task's
    run_callbacks = stack.ledger.entries("cb:run_success")
    assert Counter(e.ds for e in run_callbacks) == Counter(HA_DAYS)  # once each, none lost
    by = {e.ds: e.pid for e in run_callbacks}
    # The first run's by whichever daemon drove then (on loaded hosts the lease may
    # change hands before the kill); the others' by the survivor: the driver was dead.
    assert by[HA_DAYS[0]] in {driver.process.pid, survivor.process.pid}, by
    assert by[HA_DAYS[1]] == by[HA_DAYS[2]] == survivor.process.pid, by
    tries = Counter((e.ds, e.try_number) for e in stack.ledger.entries("cb:task_success"))
    assert tries == Counter((day, 1) for day in HA_DAYS)
