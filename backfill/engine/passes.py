"""One coordinator pass over one backfill, inside the caller's transaction.

The order is the engine contract: lock the backfill row -> (if running)
renew the lease -> reap stale running TIs -> find lost messages -> count
limits -> read ONE snapshot (and the past its depends_on_past TIs need) ->
plan (pure, under the policy of the backfill's options) -> apply the
decisions as compare-and-set statements -> finish and start runs (at most
max_active_runs of the DAG running, across backfills) -> conclude the
backfill. The caller commits, then publishes `Applied.messages`. Lease
renewal and recovery (reap, lost messages) are "housekeeping": the caller
asks for them about once a second, not in every millisecond-scale pass, and
says how stale a running or queued TI must be (`Housekeeping`).

Invariants:
- every decision comes from the one snapshot of this pass; a row that
  changed since is not touched by its conditional statement and is decided
  again next pass;
- the limits are locked (`lock_limits`: the DAG and every pool its TIs can use)
  before they are counted, and stay locked until the pass commits, so what it
  queues is admitted under counts nobody else can add to meanwhile: pools and
  concurrency limits hold across coordinators and backfills, from one count;
- with stop-on-failure no run starts once any TI of the backfill has failed
  (the planner sees failures of finished runs in `Snapshot.earlier_failures`);
  the runs already running are driven to their end, then the backfill ends
  `failed` and the runs that never started are marked failed too;
- a run ends (success, failed, or failed in a deadlock) by ONE conditional
  UPDATE from `running` that returns the rows it changed: `Applied.ended_runs`
  holds exactly the runs this pass ended, for their callbacks after the commit
  (`engine.run_callbacks`); runs failed by the backfill's end or a cancel (which
  never ran, or were stopped from outside) are not among them;
- a backfill ends exactly once, by the pass that sees its last run finish
  (or a deadlock): `success` only if no TI failed;
- a `cancelled` backfill is wound down: queued TIs back to `scheduled`
  (their messages lose the claim race); running TIs finish and their outcome
  is recorded, or are reaped once silent; each unfinished run ends `failed`
  as soon as none of its TIs runs, and the drive goes on until none is left.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from backfill.config import MAX_MAP_LENGTH
from backfill.engine.errors import DagChanged
from backfill.engine.expand import expand_mapped
from backfill.errors import UserError
from backfill.messages import TaskMessage
from backfill.model.dag import DAG
from backfill.model.states import BackfillState, RunState, TIState
from backfill.planning import pass_planner
from backfill.planning.depends import wanted_past
from backfill.planning.pass_planner import Decisions, Policy
from backfill.planning.run_options import (
    DependsOnPast,
    Execution,
    FailurePolicy,
    Order,
    Retries,
    RunOptions,
)
from backfill.planning.snapshot import Snapshot
from backfill.store import adopt, lease, pass_reads, past, runs, tis
from backfill.store.errors import BackfillNotFound
from backfill.store.runs import BackfillRow

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

log = logging.getLogger(__name__)
_B = BackfillState


@dataclass(frozen=True, kw_only=True)
class PassConfig:
    dag: DAG
    fingerprint: str  # the DAG's, computed once: it hashes every task's options
    owner: str  # lease owner
    actor: str  # the journal's actor for the pass's transitions
    heartbeat_timeout: timedelta  # the lease's time to live
    # Plan and dispatch only while holding the lease: a driver that lost it (its host
    # cut off past the lease's time to live) leaves the backfill to its successor.
    exclusive: bool = False
    max_map_length: int = MAX_MAP_LENGTH  # TIs one mapped task may make in a run


@dataclass(frozen=True, kw_only=True)
class Housekeeping:
    """The recovery a pass does besides planning: reap running TIs whose last
    heartbeat is older than `reap_before` (None: reap nothing) and re-dispatch
    queued TIs unclaimed since before `redispatch_before`."""

    reap_before: datetime | None
    redispatch_before: datetime


@dataclass(frozen=True, kw_only=True)
class Applied:
    """What a pass did; `messages` are to be published once it has committed."""

    state: BackfillState
    changed: bool = False
    # Worth another pass at once: it started runs (their TIs are not planned
    # yet) or decided TIs without running them (a deadlock shows only once
    # nothing changes). Queueing alone is not: nothing moves until a try ends.
    again: bool = False
    messages: tuple[tuple[TaskMessage, str], ...] = ()
    reaped: int = 0
    redispatched: int = 0
    lease_epoch: int | None = None
    snapshot: Snapshot | None = None
    decisions: Decisions | None = None
    # Cancelled, with tries still running: the drive goes on until they have ended.
    winding_down: bool = False
    # Runs this pass finished: their callbacks are due once it has committed.
    ended_runs: tuple[RunEnd, ...] = ()


@dataclass(frozen=True, kw_only=True)
class RunEnd:
    """A run the pass finished, and why (Airflow's callback `reason`)."""

    run: runs.EndedRun
    reason: str


DEADLOCKED = "all_tasks_deadlocked"
_REASONS = {RunState.SUCCESS: "success", RunState.FAILED: "task_failure"}


def execute(
    conn: Connection,
    backfill_id: int,
    cfg: PassConfig,
    *,
    now: datetime,
    housekeeping: Housekeeping | None,
) -> Applied:
    """One pass. Without `housekeeping` it neither renews a lease it holds nor looks
    for stale or lost TIs: both work at a scale of seconds, passes at milliseconds."""
    row = runs.lock_backfill(conn, backfill_id)
    if row is None:
        raise BackfillNotFound(backfill_id)
    if row.state is _B.CANCELLED:
        return _wind_down(conn, row, cfg, housekeeping, now=now)
    if row.state is _B.QUEUED:  # created but never picked up: this coordinator starts it
        # Cannot miss: the row was read queued under its lock (`lock_backfill`), held till commit.
        runs.set_backfill_state(conn, row.id, _B.RUNNING, seen=_B.QUEUED, now=now)
        row = replace(row, state=_B.RUNNING)
    epoch = None
    if row.state in (_B.RUNNING, _B.PAUSED):  # a driver waiting through a pause keeps it
        epoch = _lease(conn, row, cfg, now=now, renew=housekeeping is not None)
    if row.state is not _B.RUNNING or (epoch is None and cfg.exclusive):
        return Applied(state=row.state, lease_epoch=epoch)
    _check_dag(row, cfg)
    return _run(conn, row, cfg, epoch, now=now, housekeeping=housekeeping)


def _lease(
    conn: Connection, row: BackfillRow, cfg: PassConfig, *, now: datetime, renew: bool
) -> int | None:
    """The lease epoch if this coordinator holds the lease (taking or renewing it), else None."""
    expires = row.lease_expires_at
    if not renew and row.lease_owner == cfg.owner and expires is not None and expires > now:
        return row.lease_epoch
    ttl = cfg.heartbeat_timeout
    return lease.acquire_lease(conn, row.id, owner=cfg.owner, now=now, ttl=ttl)


def policy_for(row: BackfillRow, dag: DAG, options: RunOptions) -> Policy:
    """The planner's policy, from the options stored with the backfill (`row.options`)."""
    selected = None
    if options.task_regex is not None:
        selected = frozenset(tid for tid in dag.tasks if options.selects(tid))
    ignore_first = options.depends_on_past is DependsOnPast.IGNORE_FIRST
    return Policy(
        max_active_runs=options.max_active_runs or dag.max_active_runs,
        stop_on_failure=options.on_failure is FailurePolicy.STOP,
        retries_enabled=options.retries is Retries.AS_DECLARED,
        order=options.order,
        dependencies=options.dependencies,
        selected=selected,
        past_ignored_on=row.start if ignore_first else None,  # the first logical date
        maps=options.execution is not Execution.MARK_SUCCESS,
    )


def _with_past(conn: Connection, snapshot: Snapshot, dag: DAG, policy: Policy) -> Snapshot:
    """The snapshot with the past its pending depends_on_past TIs need (`store.past`)."""
    task_ids, dates = wanted_past(dag, snapshot, policy.selects)
    if not dates:
        return snapshot
    found = past.past_states(conn, dag_id=dag.dag_id, task_ids=task_ids, dates=dates)
    return replace(snapshot, past_states=found)


def _check_dag(row: BackfillRow, cfg: PassConfig) -> None:
    dag = cfg.dag
    if row.dag_id != dag.dag_id:
        raise UserError(f"backfill {row.id} is of DAG {row.dag_id!r}, not {dag.dag_id!r}")
    if row.dag_fingerprint != cfg.fingerprint:
        raise DagChanged(
            f"DAG {dag.dag_id!r} changed since backfill {row.id} was created (fingerprint "
            f"{row.dag_fingerprint}, now {cfg.fingerprint}); restore the DAG file it was "
            f"planned with, or cancel it: backfill cancel {row.id}"
        )


def _run(
    conn: Connection,
    row: BackfillRow,
    cfg: PassConfig,
    epoch: int | None,
    *,
    now: datetime,
    housekeeping: Housekeeping | None,
) -> Applied:
    reaped, lost = _recover(conn, row, cfg, housekeeping, now=now) if housekeeping else ([], [])
    options = RunOptions.from_json(row.options)
    policy = policy_for(row, cfg.dag, options)
    tis.lock_limits(conn, row.dag_id, pools_of(cfg.dag, options))
    counts = tis.limit_counts(conn, row.dag_id)
    snapshot = pass_reads.read_snapshot(
        conn, row.id, counts, task_ids=policy.selected, backlog_cap=policy.max_active_runs
    )
    snapshot = _with_past(conn, snapshot, cfg.dag, policy)
    decisions = pass_planner.plan(snapshot, cfg.dag, policy, now)
    ended = _apply_terminal(conn, decisions, actor=cfg.actor, now=now)
    ended += expand_mapped(
        conn, decisions.to_expand, cfg.dag, cap=cfg.max_map_length, actor=cfg.actor, now=now
    )
    # The planner admitted these under `counts`, read under the limit locks still held.
    queued = tis.queue(conn, decisions.to_queue, actor=cfg.actor, now=now)
    outcomes = [(run.id, state) for run, state in decisions.finished_runs]
    finished = runs.finish_runs(conn, outcomes, now=now)
    deadlocked = _fail_deadlocked(conn, snapshot, decisions, finished, now=now)
    started = runs.start_runs(
        conn,
        row.id,
        decisions.runs_to_start,
        dag_id=row.dag_id,
        limit=policy.max_active_runs,
        backwards=policy.order is Order.BACKWARD,
        now=now,
    )
    running_left = len(snapshot.runs) - len(finished) + started
    state = _conclude(
        conn, row, snapshot, decisions, running_left=running_left, policy=policy, now=now
    )
    return Applied(
        state=state,
        changed=bool(reaped or ended or queued or finished or started or state is not _B.RUNNING),
        again=bool((reaped or ended or started) and state is _B.RUNNING),
        messages=_messages(row, snapshot, [*lost, *queued]),
        reaped=len(reaped),
        redispatched=len(lost),
        lease_epoch=epoch,
        snapshot=snapshot,
        decisions=decisions,
        ended_runs=(
            *(RunEnd(run=r, reason=_REASONS[r.state]) for r in finished),
            *(RunEnd(run=r, reason=DEADLOCKED) for r in deadlocked),
        ),
    )


def _fail_deadlocked(
    conn: Connection,
    snapshot: Snapshot,
    decisions: Decisions,
    finished: Sequence[runs.EndedRun],
    *,
    now: datetime,
) -> list[runs.EndedRun]:
    """On a deadlock, its running runs end `failed` here, by the conditional statement
    that finishes runs, so their callbacks fire as any run's (the backfill's end then
    fails the runs that never started, which get none: no run of them ever ran)."""
    if decisions.deadlock is None:
        return []
    done = {r.id for r in finished}
    stuck = [(r.id, RunState.FAILED) for r in snapshot.runs if r.id not in done]
    return runs.finish_runs(conn, stuck, now=now)


def _recover(
    conn: Connection, row: BackfillRow, cfg: PassConfig, chores: Housekeeping, *, now: datetime
) -> tuple[list[int], list[tis.Queued]]:
    """Reap running TIs whose heartbeat is stale; find queued TIs whose message was lost."""
    reaped = []
    if chores.reap_before is not None:
        reaped = tis.reap_stale(
            conn,
            backfill_id=row.id,
            cutoff=chores.reap_before,
            retry_delays={tid: task.options.retry_delay for tid, task in cfg.dag.tasks.items()},
            actor=cfg.actor,
            now=now,
        )
    cutoff = chores.redispatch_before
    lost = tis.redispatch_lost(conn, backfill_id=row.id, cutoff=cutoff, now=now)
    return reaped, lost


def _apply_terminal(conn: Connection, decisions: Decisions, *, actor: str, now: datetime) -> int:
    """TIs decided without running: upstream_failed, skipped, failed (retries disabled)."""
    changed = 0
    for tis_, state in (
        (decisions.upstream_failed, TIState.UPSTREAM_FAILED),
        (decisions.skipped, TIState.SKIPPED),
        (decisions.retries_exhausted, TIState.FAILED),
    ):
        changed += len(tis.set_state(conn, tis_, state, actor=actor, now=now))
    return changed


def pools_of(dag: DAG, options: RunOptions) -> list[str]:
    """Every pool the backfill's TIs can use: `--pool`, else its tasks' own (each TI
    copies its task's pool, or `--pool`, when created or cleared: `backfill.engine.create`)."""
    if options.pool is not None:
        return [options.pool]
    return sorted({task.options.pool for task in dag.tasks.values()})


def _conclude(
    conn: Connection,
    row: BackfillRow,
    snapshot: Snapshot,
    decisions: Decisions,
    *,
    running_left: int,
    policy: Policy,
    now: datetime,
) -> BackfillState:
    """The backfill's state after this pass; ends it when nothing is left to drive."""
    if decisions.deadlock is not None:
        return _end(conn, row, _B.FAILED, now=now)
    if running_left:
        return _B.RUNNING
    failed = pass_reads.has_failures(conn, row.id, task_ids=policy.selected)
    if snapshot.queued_runs and not (policy.stop_on_failure and failed):
        return _B.RUNNING  # runs will start next pass
    return _end(conn, row, _B.FAILED if failed or snapshot.queued_runs else _B.SUCCESS, now=now)


def _end(
    conn: Connection, row: BackfillRow, state: BackfillState, *, now: datetime
) -> BackfillState:
    # Cannot miss: the pass read the row running under its lock, held till commit (a
    # cancel changes the row only after the pass commits: `store.control`).
    runs.set_backfill_state(conn, row.id, state, seen=_B.RUNNING, now=now)
    adopt.fail_unfinished_runs(conn, row.id, now=now)  # none left is the usual case, not a miss
    return state


def _wind_down(
    conn: Connection,
    row: BackfillRow,
    cfg: PassConfig,
    housekeeping: Housekeeping | None,
    *,
    now: datetime,
) -> Applied:
    """A cancelled backfill: its queued TIs withdrawn; its running tries go on (a drain)
    and are reaped if their worker went silent; a run ends `failed` once none of its
    TIs runs. Winding down until no run is left unfinished."""
    unqueued = adopt.unqueue(conn, row.id, actor=cfg.actor, now=now)
    reaped: list[int] = []
    if housekeeping is not None and housekeeping.reap_before is not None:
        cutoff = housekeeping.reap_before
        reaped = tis.reap_stale(
            conn, backfill_id=row.id, cutoff=cutoff, retry_delays={}, actor=cfg.actor, now=now
        )
    failed = adopt.fail_unfinished_runs(conn, row.id, now=now, idle_only=True)
    return Applied(
        state=row.state,
        changed=bool(unqueued or reaped or failed),
        reaped=len(reaped),
        winding_down=adopt.unfinished_runs(conn, row.id) > 0,
    )


def _messages(
    row: BackfillRow, snapshot: Snapshot, queued: Sequence[tis.Queued]
) -> tuple[tuple[TaskMessage, str], ...]:
    """One message per queued try. Every queued TI is in a running run, hence in the snapshot."""
    run_of = {t.id: t.dag_run_id for t in snapshot.tis}
    dates = {r.id: r.logical_date for r in snapshot.runs}
    out = []
    for q in queued:
        if q.id not in run_of:  # pragma: no cover - the invariant above
            log.error("queued TI %s is not in a running run; not dispatched", q.id)
            continue
        message = TaskMessage(
            ti_id=q.id,
            try_number=q.try_number,
            backfill_id=row.id,
            dag_id=row.dag_id,
            task_id=q.task_id,
            logical_date=dates[run_of[q.id]].isoformat(),
            map_index=q.map_index,
        )
        out.append((message, q.queue))
    return tuple(out)
