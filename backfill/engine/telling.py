"""What a driver tells of a pass and of its backfill: the pass's result, and the story
`backfill status` reads back (`planning.story`, kept with the backfill).

Invariants:
- `result_of` turns a committed pass into a `PassResult`: TI keys by reason,
  counts of what the pass read, the earliest time something is due;
- `progress` and `outcome` read a backfill in one consistent snapshot each;
- `tell` writes the story only when the driver holds the lease and the story
  says something new (`Story.due`): one small transaction every few seconds,
  not one per pass; its count of finished TIs is read in that transaction.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import pendulum

from backfill.engine.passes import Applied
from backfill.model.states import FINISHED, TIState
from backfill.planning.results import Keys, Outcome, PassResult, Progress, TIKey, next_due
from backfill.planning.run_options import RunOptions
from backfill.planning.story import Story
from backfill.store import adopt, reads, reports, status
from backfill.store.errors import BackfillNotFound

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine


def result_of(applied: Applied, dispatched: int, now: datetime, *, dag_id: str) -> PassResult:
    """What a pass did, as the coordinator tells it (TI keys, counts, the next due time)."""
    snapshot, decisions = applied.snapshot, applied.decisions
    keys = Keys(snapshot, dag_id) if snapshot else None
    return PassResult(
        state=applied.state,
        changed=applied.changed,
        again=applied.again,
        dispatched=dispatched,
        reaped=applied.reaped,
        redispatched=applied.redispatched,
        lease_held=applied.lease_epoch is not None,
        waiting=keys.by_reason(decisions.waiting) if keys and decisions else {},
        deadlock=(
            keys.by_reason(decisions.deadlock)
            if keys and decisions and decisions.deadlock is not None
            else None
        ),
        next_due=next_due(snapshot, now),
        queued=_count(applied, TIState.QUEUED) + len(applied.messages),
        running=_count(applied, TIState.RUNNING),
        winding_down=applied.winding_down,
    )


def _count(applied: Applied, state: TIState) -> int:
    """TIs of the pass's snapshot in `state`, as it read them."""
    seen = applied.snapshot.tis if applied.snapshot else ()
    return sum(1 for t in seen if t.state is state)


def tell(
    engine: Engine,
    backfill_id: int,
    result: PassResult,
    story: Story,
    *,
    broker_down_since: datetime | None = None,
) -> None:
    """Keep `result`'s story with the backfill when it says something new (see invariants);
    `broker_down_since`: the driver cannot publish since then (it retries)."""
    now = pendulum.now("UTC")
    if not result.lease_held or not story.due(result, now, broker_down_since):
        return
    with engine.begin() as conn:
        found = status.summary(conn, backfill_id)
        if found is None:
            return
        finished = sum(found.task_instances.get(s.value, 0) for s in FINISHED)
        told = story.report(result, finished=finished, now=now, broker_down_since=broker_down_since)
        reports.write(conn, backfill_id, told)


def progress(engine: Engine, backfill_id: int, last: PassResult | None) -> Progress:
    """Counts now, in one snapshot; the waiting reasons come from `last`, the last pass."""
    with reads.reading(engine) as conn:
        summary = status.summary(conn, backfill_id)
    if summary is None:
        raise BackfillNotFound(backfill_id)
    return Progress(
        backfill_id=backfill_id,
        state=summary.state,
        runs=summary.runs,
        task_instances=summary.task_instances,
        waiting={reason: len(tis) for reason, tis in last.waiting.items()} if last else {},
    )


def outcome(engine: Engine, backfill_id: int, last: PassResult | None) -> Outcome:
    """The backfill's outcome now: its failed TIs (of the tasks it selects) read in one
    snapshot; deadlock and waiting come from `last`, the last pass."""
    with reads.reading(engine) as conn:
        summary, failed = status.summary(conn, backfill_id), adopt.failed_tis(conn, backfill_id)
    if summary is None:
        raise BackfillNotFound(backfill_id)
    selects = RunOptions.from_json(summary.options).selects  # --task-regex
    return Outcome(
        state=summary.state,
        deadlock=last.deadlock if last else None,
        failed=tuple((failed_key(f), f.last_error) for f in failed if selects(f.task_id)),
        waiting=last.waiting if last else {},
    )


def failed_key(f: adopt.FailedTI) -> TIKey:
    return TIKey(
        dag_id=f.dag_id,
        task_id=f.task_id,
        run_id=f.run_id,
        logical_date=f.logical_date,
        try_number=f.try_number,
        map_index=f.map_index,
    )
