"""Reschedule sensors and execution_timeout, end to end on ONE worker.

Ported from apache/airflow tests/jobs/test_backfill_job.py (2.x)
test_backfill_run_rescheduled and the reschedule/timeout semantics of
AIRFLOW_SEMANTICS.md sections 4-5, on real processes:
- a sensor raising `Reschedule` twice, then succeeding, ends `success` on
  the SAME try, each poke at least the reschedule delay after the previous,
  and frees the worker's slot between pokes: with a single worker, another
  TI (a second such sensor) runs in between;
- a task over its execution_timeout fails its try and is stopped: the single
  worker runs the next TI long before the callable's natural end, and the
  callable never reaches its last line;
- among ready TIs the highest priority_weight is dispatched first: the one
  worker runs them in that order.

The module's one worker (-c 1) consumes only queue `parity_solo`, the queue
of every task here.
"""

from __future__ import annotations

import itertools

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from support.processes import Cli

from backfill.store.schema import task_instances, ti_transitions

from . import observe
from .conftest import ParityStack
from .observe import day

BACKENDS = ("postgresql", "sqlite")
WORKERS = 1
QUEUES = "parity_solo"
POKE_INTERVAL = 1.0  # tests/dags_parity/sensors.py
POKES = 3
SENSORS = ("sensor_a", "sensor_b")
NATURAL_RUN = 30.0


def _journal(db: Engine, dag_id: str, task_id: str) -> list[tuple[str, str, int]]:
    ti, tr = task_instances, ti_transitions
    stmt = (
        sa.select(tr.c.from_state, tr.c.to_state, tr.c.try_number)
        .select_from(tr.join(ti, tr.c.task_instance_id == ti.c.id))
        .where(ti.c.dag_id == dag_id, ti.c.task_id == task_id)
        .order_by(tr.c.id)
    )
    with db.connect() as conn:
        return [(row.from_state, row.to_state, row.try_number) for row in conn.execute(stmt)]


def test_reschedule_keeps_the_try_and_frees_the_worker_slot(
    stack: ParityStack, db: Engine, cli: Cli
) -> None:
    done = cli("run", "parity_sensor", "-s", "2016-01-01", "-e", "2016-01-01")
    assert done.code == 0, done.log
    date = day("2016-01-01")
    tis = observe.tis(db, "parity_sensor")
    pokes: dict[str, list[float]] = {}
    for task_id in SENSORS:
        assert (tis[task_id, date].state, tis[task_id, date].try_number) == ("success", 1)
        starts = [e for e in observe.entries(stack.ledger, "parity_sensor") if e.task_id == task_id]
        assert [e.try_number for e in starts] == [1] * POKES, "a reschedule must keep the try"
        pokes[task_id] = [e.at for e in starts]
        for earlier, later in itertools.pairwise(pokes[task_id]):
            assert later - earlier >= POKE_INTERVAL - 0.05, f"{task_id} poked before it was due"
        moves = _journal(db, "parity_sensor", task_id)
        assert moves.count(("running", "up_for_reschedule", 1)) == POKES - 1
        assert moves.count(("up_for_reschedule", "queued", 1)) == POKES - 1
        assert {n for *_, n in moves} == {1}
    # One worker (-c 1): both sensors were poking at once (each one's first poke
    # came before the other's last) only because a waiting sensor held no slot.
    a, b = (pokes[t] for t in SENSORS)
    assert max(a[0], b[0]) < min(a[-1], b[-1]), f"pokes did not interleave: {a} {b}"


def test_execution_timeout_fails_the_try_and_stops_the_callable(
    stack: ParityStack, db: Engine, cli: Cli
) -> None:
    done = cli("run", "parity_timeout", "-s", "2016-01-01", "-e", "2016-01-01")
    assert done.code == 1, done.log
    assert "parity_timeout/slow/2016-01-01" in done.stdout
    assert "execution_timeout" in done.stdout

    date = day("2016-01-01")
    tis = observe.tis(db, "parity_timeout")
    slow = tis["slow", date]
    assert (slow.state, slow.try_number) == ("failed", 1)
    assert slow.last_error is not None
    assert slow.last_error.startswith("ExecutionTimeout")
    assert slow.start_date is not None
    assert slow.end_date is not None
    assert (slow.end_date - slow.start_date).total_seconds() < 10
    assert tis["after", date].state == "success"
    # The leaf (`after`, all_done) succeeded: the run succeeds (Airflow's rule),
    # the backfill fails since a TI failed.
    assert [r.state for r in observe.runs(db, "parity_timeout")] == ["success"]
    assert [b.state for b in observe.backfill_rows(db, "parity_timeout")] == ["failed"]

    events = observe.entries(stack.ledger, "parity_timeout", event=None)
    slow_events = [e.event for e in events if e.task_id == "slow"]
    assert slow_events == ["start"], "the timed-out callable went on running"
    [slow_start] = [e.at for e in events if e.task_id == "slow"]
    [after_start] = [e.at for e in events if e.task_id == "after" and e.event == "start"]
    # The one worker ran `after` long before `slow` could have ended on its own.
    assert after_start - slow_start < NATURAL_RUN / 3


def test_ready_tis_are_dispatched_by_priority_weight(
    stack: ParityStack, db: Engine, cli: Cli
) -> None:
    done = cli("run", "parity_priority", "-s", "2016-01-01", "-e", "2016-01-01")
    assert done.code == 0, done.log
    # Declared p1, p4, p2, p3; one worker runs them in dispatch order.
    order = [key[1] for key in observe.started(stack.ledger, "parity_priority")]
    assert order == ["p4", "p3", "p2", "p1"]
