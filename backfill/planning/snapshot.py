"""What one coordinator pass decides from: a consistent snapshot of a backfill.

The store reads a `Snapshot` in one query (plus the limit counts and, for
depends_on_past, the TIs at the previous dates of its runs, in the same
transaction) and hands it to the pure planner. Nothing in a pass is refreshed
piecemeal: that is what makes a spurious deadlock impossible (DESIGN 1.1).
The past is read a moment after the snapshot, so it can only be newer; a
wait for a past outside the snapshot is never taken for a deadlock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from backfill.model.states import RunState, TIState


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
    # at the previous date of a running run, in any run of the DAG (`store.past`); a
    # date without a run, or a run without that task's TI, is absent.
    past_states: Mapping[tuple[str, datetime], PastTI] = field(default_factory=dict)


@dataclass(frozen=True)
class PastTI:
    """A TI at an earlier logical date, and the state of its run."""

    state: TIState
    run_state: RunState


@dataclass(frozen=True)
class ExistingRun:
    """A DAG run already in the database, with the state of each of its TIs (dry runs)."""

    run_id: str
    state: RunState
    ti_states: Mapping[str, TIState]  # task_id -> state
