"""Driving a coordinator pass by pass, playing the workers' part in-process.

The coordinator publishes to a `Recorder` instead of a broker; the test plays
each worker through the real claim/finish statements (`claim_and_finish`), with
an explicit `Clock` (`ByHand` holds the three): what the tests of passes, policies
and the audit in tests/store/ share (and the readers of what a backfill wrote,
which the real-worker tests use too).
"""

from __future__ import annotations

import queue
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pendulum
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from backfill import DAG, Context
from backfill.config import Settings
from backfill.engine.coordinator import Coordinator
from backfill.engine.create import create_backfill
from backfill.messages import TaskMessage
from backfill.model.states import BackfillState, TIState
from backfill.planning.backfill_plan import expand_range, plan_backfill
from backfill.planning.run_options import RunOptions
from backfill.store import claims, reads, runs
from backfill.store.schema import backfills, dag_runs, task_instances

T = TypeVar("T")
PROJECT = Path(__file__).resolve().parents[2]
ENGINE_DAGS = PROJECT / "tests" / "dags_engine"
D1 = datetime(2024, 1, 1, tzinfo=UTC)
T0 = pendulum.datetime(2024, 6, 1, tz="UTC")
# The worker `claim_and_finish` plays, and its journal actor: as a real worker's
# (workers/tasks.py), its claim and its finish both name it.
CLAIMANT = "test:1"
WORKER = f"worker:{CLAIMANT}"

Message = tuple[TaskMessage, str]


class Recorder:
    """A publisher that keeps the messages (part 1 plays the workers itself)."""

    def __init__(self) -> None:
        self.batches: list[list[Message]] = []
        self.inbox: queue.Queue[Message] = queue.Queue()

    def publish(self, messages: Sequence[Message]) -> None:
        self.batches.append(list(messages))
        for m in messages:
            self.inbox.put(m)

    def take(self) -> list[Message]:
        out = []
        while not self.inbox.empty():
            out.append(self.inbox.get())
        return out


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def tick(self, seconds: float = 1.0) -> pendulum.DateTime:
        self.now = self.now + timedelta(seconds=seconds)
        return self.now


def noop(ctx: Context) -> None:
    pass


def settings_for(db_url: str, home: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "home": home,
        "database_url": db_url,
        "broker_url": "filesystem://",
        "dags_folder": ENGINE_DAGS,
        "heartbeat_interval": 0.5,
        "heartbeat_timeout": 3.0,
        "queued_timeout": 120.0,
    } | overrides
    return Settings(**values)


def new_backfill(
    engine: Engine, dag: DAG, days: int, *, first: datetime = D1, **options: Any
) -> int:
    start = pendulum.instance(first)
    intervals = expand_range(dag, start, start + timedelta(days=days - 1))
    with reads.reading(engine) as conn:
        existing = reads.existing_runs(conn, dag.dag_id, [i.logical_date for i in intervals])
    plan = plan_backfill(dag, intervals, existing, RunOptions(**options))
    return create_backfill(engine, dag, plan, now=T0)


def claim_and_finish(
    engine: Engine,
    message: TaskMessage,
    outcome: TIState | None,
    *,
    now: datetime,
    error: str | None = None,
) -> claims.Claim | None:
    """Play a worker: claim the try; finish it with `outcome` (None: leave it running)."""
    with engine.begin() as conn:
        won = claims.claim(
            conn,
            ti_id=message.ti_id,
            try_number=message.try_number,
            token=uuid.uuid4().hex,
            claimant=CLAIMANT,
            hostname="test",
            now=now,
        )
    if won is not None and outcome is not None:
        with engine.begin() as conn:
            assert claims.finish(conn, won, outcome, actor=WORKER, now=now, error=error)
    return won


def ti_states(engine: Engine) -> dict[tuple[datetime, str], tuple[str, int]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                dag_runs.c.logical_date,
                task_instances.c.task_id,
                task_instances.c.state,
                task_instances.c.try_number,
            ).select_from(task_instances.join(dag_runs))
        )
        return {(r.logical_date, r.task_id): (r.state, r.try_number) for r in rows}


def run_rows(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(dag_runs).order_by(dag_runs.c.logical_date)))


def backfill_state(engine: Engine, backfill_id: int) -> BackfillState:
    with engine.connect() as conn:
        state = conn.execute(
            sa.select(backfills.c.state).where(backfills.c.id == backfill_id)
        ).scalar_one()
    return BackfillState(state)


def set_backfill(engine: Engine, backfill_id: int, state: BackfillState) -> None:
    """What `backfill pause / resume / cancel` do to the row (a transition of the table)."""
    with engine.begin() as conn:
        assert runs.set_backfill_state(conn, backfill_id, state, now=pendulum.now("UTC"))


def diamond(queue_name: str = "default", **dag_args: Any) -> DAG:
    """a >> b, and c alone: roots a and c."""
    dag = DAG("coord_test", schedule="@daily", start_date=pendulum.datetime(2024, 1, 1), **dag_args)
    a = dag.add_task("a", noop, queue=queue_name)
    b = dag.add_task("b", noop, queue=queue_name)
    dag.add_task("c", noop, queue=queue_name)
    a >> b
    return dag


def drive_by_hand(
    engine: Engine,
    coordinator: Coordinator,
    recorder: Recorder,
    backfill_id: int,
    clock: Clock,
    *,
    outcome: Callable[[TaskMessage], TIState] = lambda m: TIState.SUCCESS,
    hold: Callable[[TaskMessage], bool] = lambda m: False,
    max_passes: int = 200,
) -> list[int]:
    """Pass, then finish every published try (held ones later), until the backfill ends.

    Returns the number of running runs seen after each pass.
    """
    held: list[TaskMessage] = []
    running_seen = []
    for _ in range(max_passes):
        result = coordinator.run_pass(backfill_id, now=clock.tick())
        running_seen.append(sum(r.state == "running" for r in run_rows(engine)))
        if result.state is not BackfillState.RUNNING:
            return running_seen
        fresh = [m for m, _ in recorder.take()]
        held += [m for m in fresh if hold(m)]
        todo = [m for m in fresh if not hold(m)]
        if not todo and not result.changed and held:  # nothing else can move: release one
            todo.append(held.pop(0))
        for m in todo:
            claim_and_finish(engine, m, outcome(m), now=clock.tick(), error="ValueError: no")
    pytest.fail(f"backfill {backfill_id} did not end in {max_passes} passes")


class ByHand:
    """A real coordinator on `dag`, publishing to a `Recorder`, with an explicit clock:
    the test plays the workers (`drive_by_hand`, or `passes` and `claim_and_finish`)."""

    def __init__(self, engine: Engine, db_url: str, home: Path, dag: DAG) -> None:
        self.engine, self.dag, self.recorder, self.clock = engine, dag, Recorder(), Clock()
        settings = settings_for(db_url, home)
        self.coordinator = Coordinator(engine, settings, dag, publisher=self.recorder)

    def new(self, days: int = 1, **options: Any) -> int:
        """A new backfill of the DAG (`new_backfill`)."""
        return new_backfill(self.engine, self.dag, days, **options)

    def drive(self, backfill_id: int, **kwargs: Any) -> None:
        """`drive_by_hand` to the end of the backfill."""
        drive_by_hand(
            self.engine, self.coordinator, self.recorder, backfill_id, self.clock, **kwargs
        )

    def passes(self, backfill_id: int, count: int = 1) -> list[TaskMessage]:
        """`count` passes; the messages they published."""
        for _ in range(count):
            self.coordinator.run_pass(backfill_id, now=self.clock.tick())
        return [m for m, _ in self.recorder.take()]


def started_order(engine: Engine) -> list[datetime]:
    """Logical dates of the runs that started, in the order they started."""
    started = [r for r in run_rows(engine) if r.start_date is not None]
    return [r.logical_date for r in sorted(started, key=lambda r: (r.start_date, r.id))]


def spans(engine: Engine, task_id: str) -> list[tuple[datetime, datetime, datetime]]:
    """(logical date, start, end) of each run of `task_id` that ran, by logical date."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                dag_runs.c.logical_date, task_instances.c.start_date, task_instances.c.end_date
            )
            .select_from(task_instances.join(dag_runs))
            .where(task_instances.c.task_id == task_id, task_instances.c.start_date.is_not(None))
            .order_by(dag_runs.c.logical_date)
        )
        return [(r.logical_date, r.start_date, r.end_date) for r in rows]


def day(n: int) -> datetime:
    return D1 + timedelta(days=n)
