"""What a coordinator reports: TI keys, progress, a pass's result, a backfill's outcome.

Plain frozen data, importable without a database or a broker (the CLI's
display and reports use them). `backfill.engine.coordinator` re-exports them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from backfill.model.states import BackfillState
from backfill.planning.snapshot import Snapshot, TIRow


@dataclass(frozen=True, kw_only=True)
class TIKey:
    dag_id: str
    task_id: str
    run_id: str
    logical_date: datetime
    try_number: int
    map_index: int = -1  # a mapped task's element; -1: not mapped


@dataclass(frozen=True, kw_only=True)
class Progress:
    backfill_id: int
    state: BackfillState
    runs: Mapping[str, int]  # run state -> count, including runs not started yet (queued)
    task_instances: Mapping[str, int]  # TI state -> count
    waiting: Mapping[str, int] = field(default_factory=dict)  # last pass: reason -> TIs held back


@dataclass(frozen=True, kw_only=True)
class Outcome:
    state: BackfillState
    deadlock: Mapping[str, tuple[TIKey, ...]] | None  # reason -> blocked TIs
    failed: tuple[tuple[TIKey, str | None], ...]  # failed/upstream_failed TIs, last_error
    waiting: Mapping[str, tuple[TIKey, ...]]  # the last pass's held-back TIs, by reason


@dataclass(frozen=True, kw_only=True)
class PassResult:
    state: BackfillState  # the backfill's state after the pass
    changed: bool  # anything changed
    again: bool  # another pass may decide more at once (else: wait for a wake-up)
    dispatched: int  # messages published (newly queued plus re-dispatched)
    reaped: int  # stale running TIs reaped
    redispatched: int  # queued TIs whose message was lost, published again
    lease_held: bool
    waiting: Mapping[str, tuple[TIKey, ...]]
    deadlock: Mapping[str, tuple[TIKey, ...]] | None
    next_due: datetime | None  # the earliest retry/reschedule due after this pass
    queued: int = 0  # TIs queued after the pass (in the snapshot's runs): the workers' backlog
    running: int = 0  # TIs running as the pass read them
    winding_down: bool = False  # cancelled, with tries still running: not over yet

    @property
    def in_flight(self) -> int:
        return self.queued + self.running


class Keys:
    """Turns the snapshot's TI rows into TIKeys."""

    def __init__(self, snapshot: Snapshot, dag_id: str) -> None:
        self._runs = {r.id: r for r in snapshot.runs}
        self._dag_id = dag_id

    def key(self, ti: TIRow) -> TIKey:
        run = self._runs[ti.dag_run_id]
        return TIKey(
            dag_id=self._dag_id,
            task_id=ti.task_id,
            run_id=run.run_id,
            logical_date=run.logical_date,
            try_number=ti.try_number,
            map_index=ti.map_index,
        )

    def by_reason(self, groups: Mapping[str, Iterable[TIRow]]) -> dict[str, tuple[TIKey, ...]]:
        return {reason: tuple(self.key(t) for t in tis) for reason, tis in groups.items()}


def next_due(snapshot: Snapshot | None, now: datetime) -> datetime | None:
    """The earliest future next_try_at of a waiting TI: the longest an idle wait may last."""
    if snapshot is None:
        return None
    due = [t.next_try_at for t in snapshot.tis if t.next_try_at is not None and t.next_try_at > now]
    return min(due, default=None)
