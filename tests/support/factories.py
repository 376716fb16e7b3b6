"""Rows a test starts from, written through the store's own statements.

- `queued_backfill`: a backfill of one run whose TIs are queued for try 1, as a
  coordinator leaves them (the run started, one journal row `none -> queued`
  each): what the claim and worker tests start from.
- `ti_row`: the `TIRow` a pass would have seen, for `tis.queue` and friends.
- `existing_run`: a run and its TIs as raw rows, as an earlier backfill or
  another tool left them (no backfill, no journal): what a plan reads.
- `limit_counts`: the counts the limits are judged on (default pool of 128).
- `dated_backfill`: a backfill of one run per date and a TI per task in each, all
  `none`, runs inserted newest first (so ids do not follow dates); `move_tis` and
  `move_runs` then walk some of them to a state, as `watch` and `status` tests need.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pendulum
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from backfill.model.states import BackfillState, RunState, TIState
from backfill.model.task_options import DEFAULT_POOL
from backfill.planning.snapshot import LimitCounts, TIRow
from backfill.store import runs, tis
from backfill.store.schema import backfills, dag_runs, task_instances

from .states import force_state

COORDINATOR = "coordinator:test"  # the journal's actor of the queueing
LOGICAL_DATE = pendulum.datetime(2024, 1, 1, tz="UTC")


@dataclass(frozen=True)
class Queued:
    backfill_id: int
    dag_run_id: int  # the dag_runs key
    ti_ids: dict[str, int]  # task_id -> TI id, in id order

    @property
    def ids(self) -> list[int]:
        return list(self.ti_ids.values())


def queued_backfill(
    engine: Engine,
    *,
    dag_id: str,
    tasks: Mapping[str, int],
    fingerprint: str = "f" * 16,
    queue: str = "default",
    logical_date: datetime = LOGICAL_DATE,
    options: Mapping[str, Any] | None = None,
    conf: Mapping[str, Any] | None = None,
) -> Queued:
    """A backfill of `dag_id` with one run at `logical_date` of `tasks` (task_id ->
    max_tries), every TI queued for try 1 on `queue`."""
    now = pendulum.now("UTC")
    specs = [
        runs.TaskSpec(
            task_id=task_id,
            pool="default_pool",
            pool_slots=1,
            queue=queue,
            priority_weight=1,
            max_tries=max_tries,
        )
        for task_id, max_tries in tasks.items()
    ]
    with engine.begin() as conn:
        backfill_id = runs.insert_backfill(
            conn,
            dag_id=dag_id,
            fingerprint=fingerprint,
            start=logical_date,
            end=logical_date,
            options=dict(options or {}),
            conf={},
            now=now,
        )
        new_run = runs.NewRun(
            run_id=f"backfill__{logical_date.isoformat()}",
            logical_date=logical_date,
            data_interval_start=logical_date,
            data_interval_end=logical_date + timedelta(days=1),
        )
        [dag_run_id] = runs.insert_runs(
            conn,
            backfill_id=backfill_id,
            dag_id=dag_id,
            runs=[new_run],
            tasks=specs,
            conf=dict(conf or {}),
            now=now,
        )
        rows = conn.execute(
            sa.select(task_instances.c.id, task_instances.c.task_id)
            .where(task_instances.c.dag_run_id == dag_run_id)
            .order_by(task_instances.c.id)
        ).all()
        # As a coordinator does: TIs are queued in a running run.
        runs.start_runs(conn, backfill_id, 1, dag_id=dag_id, limit=1_000, backwards=False, now=now)
        seen = [ti_row(r.id, dag_run_id, r.task_id) for r in rows]
        queued = tis.queue(conn, seen, actor=COORDINATOR, now=now)
    assert [(q.id, q.try_number) for q in queued] == [(r.id, 1) for r in rows]
    return Queued(backfill_id, dag_run_id, {r.task_id: r.id for r in rows})


def ti_row(
    ti_id: int,
    dag_run_id: int,
    task_id: str,
    *,
    state: TIState = TIState.NONE,
    try_number: int = 0,
    max_tries: int = 1,
) -> TIRow:
    """The TI as a pass saw it (default pool, one slot, weight 1)."""
    return TIRow(
        id=ti_id,
        dag_run_id=dag_run_id,
        task_id=task_id,
        state=state,
        try_number=try_number,
        max_tries=max_tries,
        pool="default_pool",
        pool_slots=1,
        priority_weight=1,
    )


def existing_run(
    conn: Connection,
    dag_id: str,
    when: datetime,
    state: RunState | str,
    /,
    *,
    run_id: str | None = None,
    **tis: TIState | str,
) -> int:
    """A run of `dag_id` at `when` in `state` with TIs `task_id=state`, written as raw
    rows (no backfill, no journal), as another tool left it; its dag_runs key."""
    now = datetime(2030, 1, 1, tzinfo=pendulum.UTC)
    dag_run_id: int = conn.execute(
        sa.insert(dag_runs)
        .values(
            dag_id=dag_id,
            run_id=run_id or f"{dag_id}__{when.isoformat()}",
            logical_date=when,
            data_interval_start=when,
            data_interval_end=when + timedelta(days=1),
            state=state,
            conf={},
            created_at=now,
            updated_at=now,
        )
        .returning(dag_runs.c.id)
    ).scalar_one()
    for task_id, ti_state in tis.items():
        conn.execute(
            sa.insert(task_instances).values(
                dag_run_id=dag_run_id,
                dag_id=dag_id,
                task_id=task_id,
                state=ti_state,
                pool="default_pool",
                queue="default",
                updated_at=now,
            )
        )
    return dag_run_id


def limit_counts(
    sizes: Mapping[str, int] | None = None,
    used: Mapping[str, int] | None = None,
    dag_active: int = 0,
    task_active: Mapping[str, int] | None = None,
) -> LimitCounts:
    """Pool sizes (the default pool has 128 slots) and what is in use."""
    return LimitCounts(
        pool_slots=dict(used or {}),
        pool_sizes={DEFAULT_POOL: 128, **(sizes or {})},
        dag_active=dag_active,
        task_active=dict(task_active or {}),
    )


def dated_backfill(
    conn: Connection,
    dag_id: str,
    dates: Sequence[datetime],
    task_ids: Sequence[str],
    *,
    state: BackfillState = BackfillState.RUNNING,
) -> int:
    """A backfill of `dag_id` in `state` with a queued run at each of `dates` (inserted
    newest first) holding a TI per task of `task_ids` (created in that order), all
    `none`; its id."""
    now = pendulum.now("UTC")
    backfill_id = runs.insert_backfill(
        conn, dag_id=dag_id, fingerprint="f" * 64, start=min(dates), end=max(dates),
        options={}, conf={}, now=now,
    )  # fmt: skip
    specs = [
        runs.TaskSpec(task_id=t, pool="default_pool", pool_slots=1, queue="default",
                      priority_weight=1, max_tries=1)
        for t in task_ids
    ]  # fmt: skip
    new = [
        runs.NewRun(run_id=f"backfill__{d.isoformat()}", logical_date=d,
                    data_interval_start=d, data_interval_end=d + timedelta(days=1))
        for d in sorted(dates, reverse=True)
    ]  # fmt: skip
    runs.insert_runs(
        conn, backfill_id=backfill_id, dag_id=dag_id, runs=new, tasks=specs, conf={}, now=now
    )
    force_state(conn, backfills, backfills.c.id == backfill_id, state)
    return backfill_id


_MOVE_BATCH = 100  # dates per statement: keeps an IN list of TI ids under SQLite's limit


def move_tis(
    conn: Connection,
    backfill_id: int,
    state: TIState,
    dates: Sequence[datetime],
    task_ids: Sequence[str] | None = None,
) -> None:
    """Walk the TIs of `backfill_id` at `dates` (of `task_ids`; None: every task) to
    `state` through transitions their table lists."""
    ti = task_instances
    for at in range(0, len(dates), _MOVE_BATCH):
        batch = list(dates[at : at + _MOVE_BATCH])
        in_runs = sa.select(dag_runs.c.id).where(
            dag_runs.c.backfill_id == backfill_id, dag_runs.c.logical_date.in_(batch)
        )
        where = ti.c.dag_run_id.in_(in_runs)
        if task_ids is not None:
            where = sa.and_(where, ti.c.task_id.in_(list(task_ids)))
        force_state(conn, ti, where, state, updated_by="test")


def move_runs(
    conn: Connection, backfill_id: int, state: RunState, dates: Sequence[datetime]
) -> None:
    """Walk the runs of `backfill_id` at `dates` to `state`."""
    for at in range(0, len(dates), _MOVE_BATCH):
        where = sa.and_(
            dag_runs.c.backfill_id == backfill_id,
            dag_runs.c.logical_date.in_(list(dates[at : at + _MOVE_BATCH])),
        )
        force_state(conn, dag_runs, where, state)
