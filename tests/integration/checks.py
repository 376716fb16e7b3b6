"""Reading the database and the ledger back, and the assertions the tests share.

The database is read with plain SQLAlchemy Core against the schema tables:
the tests check what the product wrote, not what its own readers report.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pendulum
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from support.ledger import Key, Ledger
from support.stack import utc

from backfill.engine import create
from backfill.engine.dispatch import Dispatcher
from backfill.messages import TaskMessage
from backfill.model.dag import DAG
from backfill.planning.backfill_plan import expand_range, plan_backfill
from backfill.planning.run_options import RunOptions
from backfill.store import reads
from backfill.store.schema import backfills, dag_runs, pools, task_instances, ti_transitions

COPIES = 3  # deliveries of each message by a TriplingDispatcher


class TriplingDispatcher(Dispatcher):
    """The real dispatcher, publishing every message `COPIES` times."""

    def publish(self, messages: Sequence[tuple[TaskMessage, str]]) -> None:
        super().publish([m for m in messages for _ in range(COPIES)])


def create_backfill(
    engine: Engine, dag: DAG, start: str, end: str, options: RunOptions | None = None
) -> int:
    """Plan and create a backfill of `dag` over [start, end] (UTC), as `backfill create` does."""
    intervals = expand_range(dag, utc(start), utc(end))
    with reads.reading(engine) as conn:
        existing = reads.existing_runs(conn, dag.dag_id, [i.logical_date for i in intervals])
    plan = plan_backfill(dag, intervals, existing, options or RunOptions())
    return create.create_backfill(engine, dag, plan, now=pendulum.now("UTC"))


@dataclass(frozen=True)
class TIView:
    id: int
    dag_id: str
    task_id: str
    logical_date: datetime
    state: str
    try_number: int
    claimant: str | None
    last_error: str | None

    @property
    def key(self) -> Key:
        """The ledger key of the TI's current (last) try."""
        return (self.dag_id, self.task_id, self.logical_date, self.try_number)


def task_instances_of(engine: Engine, backfill_id: int) -> list[TIView]:
    ti, run = task_instances, dag_runs
    columns = [ti.c.id, ti.c.dag_id, ti.c.task_id, run.c.logical_date, ti.c.state]
    columns += [ti.c.try_number, ti.c.claimant, ti.c.last_error]
    stmt = (
        sa.select(*columns)
        .select_from(ti.join(run, ti.c.dag_run_id == run.c.id))
        .where(run.c.backfill_id == backfill_id)
        .order_by(run.c.logical_date, ti.c.task_id)
    )
    with engine.connect() as conn:
        return [TIView(**row._mapping) for row in conn.execute(stmt)]


def the_ti(engine: Engine, backfill_id: int, task_id: str) -> TIView:
    found = [t for t in task_instances_of(engine, backfill_id) if t.task_id == task_id]
    assert len(found) == 1, f"expected one TI of task {task_id!r}, found {found}"
    return found[0]


def backfill_row(engine: Engine, backfill_id: int) -> Any:
    with engine.connect() as conn:
        return conn.execute(sa.select(backfills).where(backfills.c.id == backfill_id)).one()


def backfill_ids(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return [int(i) for i in conn.execute(sa.select(backfills.c.id)).scalars()]


def set_pool(engine: Engine, name: str, slots: int) -> None:
    with engine.begin() as conn:
        conn.execute(sa.delete(pools).where(pools.c.name == name))
        conn.execute(sa.insert(pools).values(name=name, slots=slots, description="integration"))


def assert_all_succeeded_first_try(tis: Iterable[TIView]) -> None:
    bad = [t for t in tis if t.state != "success" or t.try_number != 1]
    assert not bad, f"TIs not ending success on try 1: {bad}"


def assert_each_try_started_once(ledger: Ledger, expected: set[Key]) -> None:
    """The ledger shows exactly the tries in `expected` (for their DAGs), each started once."""
    starts = ledger.starts()
    twice = {k: n for k, n in starts.items() if n > 1}
    assert not twice, f"tries whose callable started more than once: {twice}"
    dag_ids = {key[0] for key in expected}
    ran = {k for k in starts if k[0] in dag_ids}
    assert ran == expected, (
        f"ran but not expected: {sorted(ran - expected)}; "
        f"expected but never ran: {sorted(expected - ran)}"
    )


def max_overlap(spans: Iterable[tuple[float, float]]) -> int:
    """The largest number of the half-open intervals [start, end) alive at one instant."""
    # At equal times an end (-1) sorts before a start (+1): touching is not overlapping.
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    alive = peak = 0
    for _, step in events:
        alive += step
        peak = max(peak, alive)
    return peak


def claims_per_ti(engine: Engine, backfill_id: int) -> Counter[int]:
    """How many times the journal shows each TI of the backfill entering `running`."""
    journal, ti, run = ti_transitions, task_instances, dag_runs
    stmt = (
        sa.select(journal.c.task_instance_id)
        .select_from(journal.join(ti, ti.c.id == journal.c.task_instance_id))
        .join(run, run.c.id == ti.c.dag_run_id)
        .where(run.c.backfill_id == backfill_id, journal.c.to_state == "running")
    )
    with engine.connect() as conn:
        return Counter(conn.execute(stmt).scalars())


def drivers_in_turn(engine: Engine, backfill_id: int) -> list[str]:
    """The actors that queued the backfill's TIs, in journal order, each run of the same
    actor told once: `[A, B]` is A driving, then B. Every drive has an owner of its own
    (`Coordinator.owner`), so an actor seen twice (`[A, B, A]`) means two drove at once."""
    journal, ti, run = ti_transitions, task_instances, dag_runs
    stmt = (
        sa.select(journal.c.actor)
        .select_from(journal.join(ti, ti.c.id == journal.c.task_instance_id))
        .join(run, run.c.id == ti.c.dag_run_id)
        .where(run.c.backfill_id == backfill_id, journal.c.to_state == "queued")
        .order_by(journal.c.id)
    )
    with engine.connect() as conn:
        actors = list(conn.execute(stmt).scalars())
    return [actor for i, actor in enumerate(actors) if i == 0 or actors[i - 1] != actor]
