"""The pure core of a coordinator pass: one snapshot in, decisions out.

No I/O and no clock: `now` is passed in, so every decision is a function of
its inputs and can be property-tested. The store applies the decisions as
compare-and-set statements; a row that changed meanwhile is decided again on
the next pass, so a decision made from a stale snapshot is harmless.

Invariant (DESIGN guarantee 4): `Decisions.deadlock` is set only when the
snapshot shows no TI queued, running or waiting for a due time, nothing is
ready, no TI or run changes state in this pass and no new run can start.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from backfill.dag import DAG
from backfill.limits import Admission, admit
from backfill.snapshot import RunRow, Snapshot, TIRow
from backfill.states import ACTIVE, FAILED_STATES, FINISHED, WAITING, RunState, TIState
from backfill.trigger_rules import Verdict, evaluate

_PENDING = frozenset({TIState.NONE, TIState.SCHEDULED})


@dataclass(frozen=True, kw_only=True)
class Policy:
    """The parts of the run options a pass needs."""

    max_active_runs: int
    stop_on_failure: bool = True  # no new run starts once a TI has failed
    retries_enabled: bool = True


@dataclass(frozen=True, kw_only=True)
class Decisions:
    to_queue: tuple[TIRow, ...] = ()  # admitted under the limits, in dispatch order
    upstream_failed: tuple[TIRow, ...] = ()  # upstreams first
    skipped: tuple[TIRow, ...] = ()
    retries_exhausted: tuple[TIRow, ...] = ()  # up_for_retry TIs to fail (retries disabled)
    finished_runs: tuple[tuple[RunRow, RunState], ...] = ()
    runs_to_start: int = 0
    waiting: Mapping[str, tuple[TIRow, ...]] = field(default_factory=dict)  # reason -> TIs
    deadlock: Mapping[str, tuple[TIRow, ...]] | None = None  # reason -> TIs, when deadlocked

    @property
    def changes_anything(self) -> bool:
        return bool(
            self.to_queue
            or self.upstream_failed
            or self.skipped
            or self.retries_exhausted
            or self.finished_runs
            or self.runs_to_start
        )


def plan(snapshot: Snapshot, dag: DAG, policy: Policy, now: datetime) -> Decisions:
    """Decide what this pass changes, from `snapshot` alone."""
    order = {tid: i for i, tid in enumerate(dag.topological_order())}
    by_run: dict[int, dict[str, TIRow]] = defaultdict(dict)
    for ti in snapshot.tis:
        by_run[ti.run_id][ti.task_id] = ti
    dates = {run.id: run.logical_date for run in snapshot.runs}
    verdicts = _Verdicts({ti.id: ti.state for ti in snapshot.tis})
    for run in snapshot.runs:
        tis = by_run[run.id]
        for task_id in sorted(tis, key=order.__getitem__):
            verdicts.decide(tis[task_id], tis, dag, policy, now)

    ready = sorted(
        verdicts.ready, key=lambda t: (-t.priority_weight, dates[t.run_id], order[t.task_id])
    )
    admission = admit(ready, dag, snapshot.limits)
    finished = _finished_runs(snapshot.runs, by_run, verdicts.effective, dag)
    decisions = Decisions(
        to_queue=tuple(admission.admitted),
        upstream_failed=tuple(verdicts.upstream_failed),
        skipped=tuple(verdicts.skipped),
        retries_exhausted=tuple(verdicts.exhausted),
        finished_runs=tuple(finished),
        runs_to_start=_runs_to_start(snapshot, finished, verdicts.effective, policy),
        waiting=admission.held,
    )
    return _with_deadlock(decisions, snapshot, admission, verdicts.effective)


@dataclass
class _Verdicts:
    """Per-TI verdicts of one pass.

    `effective` holds states as they will be after this pass's terminal
    decisions, so one pass propagates upstream_failed/skipped down a chain.
    """

    effective: dict[int, TIState]
    ready: list[TIRow] = field(default_factory=list)
    upstream_failed: list[TIRow] = field(default_factory=list)
    skipped: list[TIRow] = field(default_factory=list)
    exhausted: list[TIRow] = field(default_factory=list)

    def decide(
        self, ti: TIRow, run_tis: Mapping[str, TIRow], dag: DAG, policy: Policy, now: datetime
    ) -> None:
        if ti.state in WAITING:
            if ti.state is TIState.UP_FOR_RETRY and not policy.retries_enabled:
                self.exhausted.append(ti)
                self.effective[ti.id] = TIState.FAILED
            elif ti.next_try_at is None or ti.next_try_at <= now:
                self.ready.append(ti)
            return
        if ti.state not in _PENDING:
            return
        task = dag.tasks[ti.task_id]
        upstream = [self.effective[run_tis[up].id] for up in task.upstream_ids if up in run_tis]
        verdict = evaluate(task.options.trigger_rule, upstream)
        if verdict is Verdict.RUN:
            self.ready.append(ti)
        elif verdict is Verdict.UPSTREAM_FAILED:
            self.upstream_failed.append(ti)
            self.effective[ti.id] = TIState.UPSTREAM_FAILED
        elif verdict is Verdict.SKIP:
            self.skipped.append(ti)
            self.effective[ti.id] = TIState.SKIPPED


def _finished_runs(
    runs: tuple[RunRow, ...],
    by_run: Mapping[int, Mapping[str, TIRow]],
    effective: Mapping[int, TIState],
    dag: DAG,
) -> list[tuple[RunRow, RunState]]:
    """Runs whose every TI is finished, with their outcome decided by the leaves."""
    out = []
    for run in runs:
        tis = by_run.get(run.id, {})
        if not all(effective[ti.id] in FINISHED for ti in tis.values()):
            continue
        # Leaves of the TIs the run has: with a task subset (--task-regex) a task
        # whose downstream tasks were left out decides the run's outcome too.
        leaves = [ti for tid, ti in tis.items() if not dag.tasks[tid].downstream_ids & tis.keys()]
        failed = any(effective[ti.id] in FAILED_STATES for ti in leaves)
        out.append((run, RunState.FAILED if failed else RunState.SUCCESS))
    return out


def _runs_to_start(
    snapshot: Snapshot,
    finished: list[tuple[RunRow, RunState]],
    effective: Mapping[int, TIState],
    policy: Policy,
) -> int:
    """How many queued runs may start now: the rolling window of `max_active_runs`."""
    failed_seen = (
        snapshot.earlier_failures
        or any(state in FAILED_STATES for state in effective.values())
        or any(outcome is RunState.FAILED for _, outcome in finished)
    )
    if policy.stop_on_failure and failed_seen:
        return 0
    still_running = len(snapshot.runs) - len(finished)
    return max(0, min(snapshot.queued_runs, policy.max_active_runs - still_running))


def _with_deadlock(
    decisions: Decisions,
    snapshot: Snapshot,
    admission: Admission,
    effective: Mapping[int, TIState],
) -> Decisions:
    """Declare a deadlock only when this snapshot proves nothing can ever move."""
    if decisions.changes_anything or admission.transient:
        return decisions
    if any(ti.state in ACTIVE or ti.state in WAITING for ti in snapshot.tis):
        return decisions
    stuck = [ti for ti in snapshot.tis if effective[ti.id] not in FINISHED]
    if not stuck:
        return decisions
    reasons: dict[str, list[TIRow]] = defaultdict(list)
    blocked_ids = {ti.id for tis in admission.held.values() for ti in tis}
    for reason, tis in admission.held.items():
        reasons[reason].extend(tis)
    for ti in stuck:
        if ti.id not in blocked_ids:
            reasons["waiting for an upstream task that cannot run"].append(ti)
    return replace(decisions, deadlock={k: tuple(v) for k, v in reasons.items()})
