"""The two races of Airflow's BackfillJob (DESIGN 1), on real workers, brokers and databases.

- the 2016 spurious deadlock: example_bash_operator over 2 dates, 4 worker
  processes, tasks sleeping 0-20 ms, 30 backfills in a row: never a deadlock,
  every backfill succeeds, every TI runs exactly once;
- the double run, from duplicate delivery: every message published 3 times,
  on Redis and on RabbitMQ (`core_stack`);
- the double run, from two coordinators driving one backfill at once, which
  must also keep max_active_runs and a 1-slot pool.

"Ran" is counted from the execution ledger the callables append to (no
uniqueness anywhere), never from what the product reports about itself.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from support.ledger import Key
from support.processes import Coordinators, WorkerPool
from support.rows import journal
from support.stack import Stack, utc
from support.waiting import wait_until

from backfill.store.schema import RefusalKind, dag_runs, refused_writes, task_instances
from workers.app import make_app

from .checks import (
    COPIES,
    TriplingDispatcher,
    assert_all_succeeded_first_try,
    assert_each_try_started_once,
    claims_per_ti,
    create_backfill,
    max_overlap,
    set_pool,
    task_instances_of,
)

REPETITIONS = 30
DRIVE_TIMEOUT = 90.0  # seconds; a backfill here takes well under one


def test_no_spurious_deadlock_in_30_backfills(
    stack: Stack,
    engine_of: Callable[[Stack], Engine],
    workers: WorkerPool,
    coordinators: Coordinators,
) -> None:
    workers.start(stack, 4)
    engine = engine_of(stack)
    dag = stack.dag("race_bash")
    ran: set[Key] = set()
    for rep in range(REPETITIONS):
        # A fresh backfill on two dates of its own each time (a date has one run).
        first = utc("2016-01-01").add(days=2 * rep)
        start, end = first.to_date_string(), first.add(days=1).to_date_string()
        backfill_id = create_backfill(engine, dag, start, end)
        outcome = coordinators.thread(stack, dag, backfill_id).result(DRIVE_TIMEOUT)
        assert outcome.deadlock is None, f"repetition {rep}: deadlock reported: {outcome.deadlock}"
        assert outcome.state == "success", f"repetition {rep}: {outcome}"
        tis = task_instances_of(engine, backfill_id)
        assert len(tis) == 2 * len(dag.tasks)
        assert_all_succeeded_first_try(tis)
        ran |= {ti.key for ti in tis}
    assert len(ran) == REPETITIONS * 2 * len(dag.tasks)
    assert_each_try_started_once(stack.ledger, ran)


def test_every_try_runs_once_when_every_message_is_delivered_three_times(
    core_stack: Stack,
    engine_of: Callable[[Stack], Engine],
    workers: WorkerPool,
    coordinators: Coordinators,
) -> None:
    pool = workers.start(core_stack, 4)
    engine = engine_of(core_stack)
    dag = core_stack.dag("dup_delivery")
    backfill_id = create_backfill(engine, dag, "2016-01-01", "2016-01-03")
    dispatcher = TriplingDispatcher(make_app(core_stack.settings()))
    try:
        outcome = coordinators.thread(core_stack, dag, backfill_id, publisher=dispatcher).result(
            DRIVE_TIMEOUT
        )
    finally:
        dispatcher.close()
    assert outcome.state == "success", outcome
    tis = task_instances_of(engine, backfill_id)
    assert len(tis) == 3 * len(dag.tasks)
    assert_all_succeeded_first_try(tis)
    # Every copy reached a worker and was handled to its end (by the claim's
    # winner, or acked as a no-op by a loser) before the ledger is judged.
    copies = COPIES * len(tis)
    wait_until(
        lambda: sum(w.finished() for w in pool) == copies,
        timeout=60,
        what=f"the workers to end all {copies} deliveries",
        explain=workers.logs_tail,
    )
    assert sum(w.received() for w in pool) == copies
    # Each try was claimed once (one `running` in the journal); every other copy lost the
    # claim and was acked as a no-op.
    assert claims_per_ti(engine, backfill_id) == {ti.id: 1 for ti in tis}
    losers = sum(w.output().count("lost the claim race") for w in pool)
    assert losers == copies - len(tis)
    assert refused_claims(engine, backfill_id) == {ti.id: COPIES - 1 for ti in tis}
    assert_each_try_started_once(core_stack.ledger, {ti.key for ti in tis})


def refused_claims(engine: Engine, backfill_id: int) -> dict[int, int]:
    """How many deliveries of each TI of the backfill the fence refused, as recorded."""
    ti, run, refused = task_instances, dag_runs, refused_writes
    stmt = (
        sa.select(refused.c.task_instance_id, sa.func.count())
        .join(ti, ti.c.id == refused.c.task_instance_id)
        .join(run, run.c.id == ti.c.dag_run_id)
        .where(run.c.backfill_id == backfill_id, refused.c.kind == RefusalKind.CLAIM.value)
        .group_by(refused.c.task_instance_id)
    )
    with engine.connect() as conn:
        return {int(row[0]): int(row[1]) for row in conn.execute(stmt)}


def test_two_coordinators_on_one_backfill_run_each_try_once_within_limits(
    pg_stack: Stack,
    engine_of: Callable[[Stack], Engine],
    workers: WorkerPool,
    coordinators: Coordinators,
) -> None:
    engine = engine_of(pg_stack)
    dag = pg_stack.dag("two_drivers")
    set_pool(engine, "it_single", 1)
    workers.start(pg_stack, 4)
    backfill_id = create_backfill(engine, dag, "2016-01-01", "2016-01-08")
    # Not exclusive: both plan and dispatch, lease or not (a deposed driver coming back
    # would stand by), so that every pass races the other's under the row lock.
    drivers = [
        coordinators.thread(pg_stack, dag, backfill_id, owner=f"it-driver-{n}", exclusive=False)
        for n in (1, 2)
    ]
    for driver in drivers:
        outcome = driver.result(DRIVE_TIMEOUT)
        assert outcome.state == "success", outcome
    tis = task_instances_of(engine, backfill_id)
    assert len(tis) == 8 * len(dag.tasks)
    assert_all_succeeded_first_try(tis)
    assert_each_try_started_once(pg_stack.ledger, {ti.key for ti in tis})

    spans = pg_stack.ledger.spans()
    loads = [span for key, span in spans.items() if key[1] == "load"]
    assert len(loads) == 8
    assert max_overlap(loads) == 1, "two `load` tries ran at once in the 1-slot pool"
    # A run is active at least from its first callable's start to its last's end.
    by_date: dict[datetime, list[float]] = {}
    for (_, _, date, _), (begin, end) in spans.items():
        by_date.setdefault(date, []).extend((begin, end))
    runs = [(min(times), max(times)) for times in by_date.values()]
    assert max_overlap(runs) == dag.max_active_runs  # reached, and never exceeded

    # Both coordinators really drove: each queued some of the TIs.
    queuers = {
        row.actor
        for ti in tis
        for row in journal(engine, ti.id)
        if row.to_state == "queued" and row.actor.startswith("coordinator:")
    }
    for n in (1, 2):
        assert any(f"it-driver-{n}" in actor for actor in queuers), queuers
