"""What one coordinator pass decides from: a consistent snapshot of a backfill.

The store reads a `Snapshot` in one query (plus the limit counts and, for
depends_on_past, the TIs at the previous dates of its runs, in the same
transaction) and hands it to the pure planner. Nothing in a pass is refreshed
piecemeal: that is what makes a spurious deadlock impossible (DESIGN 1.1).
The past is read a moment after the snapshot, so it can only be newer; a
wait for a past outside the snapshot is never taken for a deadlock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from backfill.model.states import FAILED_STATES, SUCCEEDED, RunState, TIState


@dataclass(frozen=True, kw_only=True)
class TIRow:
    id: int
    dag_run_id: int  # dag_runs.id (its run's key; RunRow.run_id is the Airflow string)
    task_id: str
    state: TIState
    try_number: int
    max_tries: int
    pool: str
    pool_slots: int
    priority_weight: int
    next_try_at: datetime | None = None
    map_index: int = -1  # a mapped task's element; -1: not mapped, or its placeholder


@dataclass(frozen=True, kw_only=True)
class RunRow:
    id: int
    run_id: str
    logical_date: datetime
    state: RunState


@dataclass(frozen=True, kw_only=True)
class LimitCounts:
    """Occupancy across every backfill and coordinator (queued + running TIs)."""

    pool_slots: Mapping[str, int]  # pool name -> slots in use (sum of pool_slots)
    pool_sizes: Mapping[str, int]  # pool name -> configured slots (-1: unlimited); absent: no pool
    dag_active: int  # this DAG's queued + running TIs, all runs
    task_active: Mapping[str, int]  # task_id -> queued + running TIs of this DAG's task


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    """All TIs of the backfill's active (running) runs, read in one statement."""

    runs: tuple[RunRow, ...]  # running runs, oldest logical date first
    tis: tuple[TIRow, ...]
    # Runs of this backfill not yet started (the rolling window's backlog), counted up to
    # the backfill's max_active_runs: as many as one pass can start.
    queued_runs: int
    limits: LimitCounts
    # A TI of a run of this backfill that is not running any more ended failed or
    # upstream_failed: with stop-on-failure no new run may start.
    earlier_failures: bool = False
    # For depends_on_past: (task_id, logical_date) -> the TI of a depends_on_past task
    # at the previous date of a running run, in any run of the DAG (`store.past`; a
    # mapped task's TIs summed up by `PastTI.of`); a date without a run, or a run
    # without that task's TI, is absent.
    past_states: Mapping[tuple[str, datetime], PastTI] = field(default_factory=dict)


@dataclass(frozen=True)
class PastTI:
    """A TI at an earlier logical date, and the state of its run."""

    state: TIState
    run_state: RunState

    @classmethod
    def of(cls, states: Iterable[TIState], run_state: RunState) -> PastTI:
        """A task's TIs at one date as one: a mapped task's every TI must have succeeded
        (AIRFLOW_SEMANTICS 3), so the first failed one, else one not ended, stands for
        them; its removed map indexes count only if nothing else is left."""
        every = list(states)
        live = [s for s in every if s is not TIState.REMOVED] or every
        failed = [s for s in live if s in FAILED_STATES]
        not_ended_well = [s for s in live if s not in SUCCEEDED]
        return cls((failed or not_ended_well or live)[0], run_state)


@dataclass(frozen=True)
class ExistingRun:
    """A DAG run already in the database, with the state of each of its TIs (dry runs)."""

    run_id: str
    state: RunState
    ti_states: Mapping[str, TIState]  # task_id -> state
