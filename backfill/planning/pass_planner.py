"""The pure core of a coordinator pass: one snapshot in, decisions out.

No I/O and no clock: `now` is passed in, so every decision is a function of
its inputs and can be property-tested. The store applies the decisions as
compare-and-set statements; a row that changed meanwhile is decided again on
the next pass, so a decision made from a stale snapshot is harmless.

Policies (`Policy`, built from the backfill's `RunOptions`):
- `selected` (`--task-regex`): TIs of other tasks are treated as absent: not
  required as upstreams, not counted for a run's end, never leaves;
- `dependencies` IGNORE: a pending TI is ready whatever its upstreams
  (depends_on_past still holds: it has its own option);
- depends_on_past (`backfill.planning.depends`): a pending TI whose rule says run also
  needs its task's TI at the previous logical date to have ended success or
  skipped, except on `past_ignored_on` (`--ignore-first-depends-on-past`);
- ready TIs go by priority weight, then logical date (newest first with
  `order` BACKWARD), then topological order, then map index;
- mapped tasks (`backfill.model.mapping`): a run holds one placeholder TI (map
  index -1) of a mapped task until its rule says run; then it is to be
  expanded (`Decisions.to_expand`) into its TIs, which the next pass plans. A
  task's upstreams are all the TIs of its upstream tasks, every map index.
  With `maps` off (`--mark-success`: nothing runs, so nothing returned a list)
  the placeholder is queued like any TI, to be marked success alone.

Invariant (DESIGN guarantee 4): `Decisions.deadlock` is set only when the
snapshot shows no TI queued, running or waiting for a due time, nothing is
ready, nothing waits for a limit held elsewhere or for a past outside the
snapshot that may still end, no TI or run changes state in this pass and no
new run can start.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from backfill.model.dag import DAG
from backfill.model.states import ACTIVE, FAILED_STATES, FINISHED, WAITING, RunState, TIState
from backfill.planning.depends import (
    BEHIND_BLOCKED_PAST,
    PENDING,
    WAITING_FOR_PAST,
    Past,
    judge,
    previous_date,
)
from backfill.planning.limits import Admission, admit
from backfill.planning.run_options import Dependencies, Order
from backfill.planning.snapshot import PastTI, RunRow, Snapshot, TIRow
from backfill.planning.trigger_rules import Verdict, evaluate

UPSTREAM_CANNOT_RUN = "waiting for an upstream task that cannot run"


@dataclass(frozen=True, kw_only=True)
class Policy:
    """The parts of the run options a pass needs."""

    max_active_runs: int
    stop_on_failure: bool = True  # no new run starts once a TI has failed
    retries_enabled: bool = True
    order: Order = Order.FORWARD
    dependencies: Dependencies = Dependencies.ENFORCE
    selected: frozenset[str] | None = None  # the tasks the backfill runs; None: all
    past_ignored_on: datetime | None = None  # the logical date depends_on_past is ignored on
    # Make a mapped task's TIs; False (--mark-success): its placeholder is marked alone.
    maps: bool = True

    def selects(self, task_id: str) -> bool:
        return self.selected is None or task_id in self.selected


@dataclass(frozen=True, kw_only=True)
class Decisions:
    to_queue: tuple[TIRow, ...] = ()  # admitted under the limits, in dispatch order
    to_expand: tuple[TIRow, ...] = ()  # placeholders of mapped tasks, to make their TIs
    upstream_failed: tuple[TIRow, ...] = ()  # upstreams first
    skipped: tuple[TIRow, ...] = ()
    retries_exhausted: tuple[TIRow, ...] = ()  # up_for_retry TIs to fail (retries disabled)
    finished_runs: tuple[tuple[RunRow, RunState], ...] = ()
    runs_to_start: int = 0  # an upper bound: the store holds max_active_runs DAG-wide
    waiting: Mapping[str, tuple[TIRow, ...]] = field(default_factory=dict)  # reason -> TIs
    deadlock: Mapping[str, tuple[TIRow, ...]] | None = None  # reason -> TIs, when deadlocked

    @property
    def changes_anything(self) -> bool:
        return bool(
            self.to_queue
            or self.to_expand
            or self.upstream_failed
            or self.skipped
            or self.retries_exhausted
            or self.finished_runs
            or self.runs_to_start
        )


def plan(snapshot: Snapshot, dag: DAG, policy: Policy, now: datetime) -> Decisions:
    """Decide what this pass changes, from `snapshot` alone."""
    order = {tid: i for i, tid in enumerate(dag.topological_order())}
    tis = tuple(t for t in snapshot.tis if policy.selects(t.task_id))
    runs = sorted(snapshot.runs, key=lambda r: r.logical_date)
    verdicts = _Verdicts(dag, policy, snapshot, tis, now)
    for run in runs:  # oldest first: a date's past is decided before the date
        run_tis = verdicts.by_run[run.id]
        for task_id in sorted(run_tis, key=order.__getitem__):
            for ti in run_tis[task_id]:
                verdicts.decide(ti, run)

    rank = {run.id: i for i, run in enumerate(runs)}
    newest_first = -1 if policy.order is Order.BACKWARD else 1
    ready = sorted(
        verdicts.ready,
        key=lambda t: (
            -t.priority_weight,
            newest_first * rank[t.dag_run_id],
            order[t.task_id],
            t.map_index,
        ),
    )
    admission = admit(ready, dag, snapshot.limits)
    finished = _finished_runs(runs, verdicts.by_run, verdicts.effective, dag)
    decisions = Decisions(
        to_queue=tuple(admission.admitted),
        to_expand=tuple(verdicts.to_expand),
        upstream_failed=tuple(verdicts.upstream_failed),
        skipped=tuple(verdicts.skipped),
        retries_exhausted=tuple(verdicts.exhausted),
        finished_runs=tuple(finished),
        runs_to_start=_runs_to_start(snapshot, finished, verdicts.effective, policy),
        waiting=_grouped(admission.held, verdicts.past_blocked, verdicts.past_waiting),
    )
    return _with_deadlock(decisions, tis, admission, verdicts)


class _Verdicts:
    """Per-TI verdicts of one pass.

    `effective` holds states as they will be after this pass's terminal
    decisions, so one pass propagates upstream_failed/skipped down a chain,
    and a date's depends_on_past sees its previous date as decided this pass.
    """

    def __init__(
        self, dag: DAG, policy: Policy, snapshot: Snapshot, tis: Sequence[TIRow], now: datetime
    ) -> None:
        self.dag, self.policy, self.snapshot, self.now = dag, policy, snapshot, now
        self.effective: dict[int, TIState] = {ti.id: ti.state for ti in tis}
        # run -> task -> its TIs (several for a mapped task), by map index
        self.by_run: dict[int, dict[str, list[TIRow]]] = defaultdict(lambda: defaultdict(list))
        for ti in sorted(tis, key=lambda t: t.map_index):
            self.by_run[ti.dag_run_id][ti.task_id].append(ti)
        self.run_at = {run.logical_date: run for run in snapshot.runs}
        self.ready: list[TIRow] = []
        self.to_expand: list[TIRow] = []
        self.upstream_failed: list[TIRow] = []
        self.skipped: list[TIRow] = []
        self.exhausted: list[TIRow] = []
        self.past_blocked: dict[str, list[TIRow]] = defaultdict(list)  # reason -> TIs
        self.past_waiting: dict[str, list[TIRow]] = {WAITING_FOR_PAST: []}
        self.past_behind: set[int] = set()  # TIs waiting for a past inside the snapshot
        self.past_elsewhere = False  # some TI waits for a past outside it that may still end

    def decide(self, ti: TIRow, run: RunRow) -> None:
        if ti.state in WAITING:
            if ti.state is TIState.UP_FOR_RETRY and not self.policy.retries_enabled:
                self.exhausted.append(ti)
                self.effective[ti.id] = TIState.FAILED
            elif ti.next_try_at is None or ti.next_try_at <= self.now:
                self.ready.append(ti)
            return
        if ti.state not in PENDING:
            return
        verdict = self._upstream_verdict(ti)
        if verdict is Verdict.RUN and self._past_allows(ti, run):
            mapped = self.dag.tasks[ti.task_id].expansion is not None and self.policy.maps
            placeholder = mapped and ti.map_index < 0
            (self.to_expand if placeholder else self.ready).append(ti)
        elif verdict is Verdict.UPSTREAM_FAILED:
            self.upstream_failed.append(ti)
            self.effective[ti.id] = TIState.UPSTREAM_FAILED
        elif verdict is Verdict.SKIP:
            self.skipped.append(ti)
            self.effective[ti.id] = TIState.SKIPPED

    def _upstream_verdict(self, ti: TIRow) -> Verdict:
        if self.policy.dependencies is Dependencies.IGNORE:
            return Verdict.RUN
        task = self.dag.tasks[ti.task_id]
        run_tis = self.by_run[ti.dag_run_id]
        upstream = [self.effective[t.id] for up in task.upstream_ids for t in run_tis.get(up, ())]
        return evaluate(task.options.trigger_rule, upstream)

    def _past_allows(self, ti: TIRow, run: RunRow) -> bool:
        """depends_on_past; a TI it holds back is recorded with its reason."""
        if not self.dag.tasks[ti.task_id].options.depends_on_past:
            return True
        ignored_on = self.policy.past_ignored_on
        previous = previous_date(self.dag, run.logical_date)
        if previous is None or (ignored_on is not None and run.logical_date == ignored_on):
            return True
        earlier = self.run_at.get(previous)
        if earlier is None:
            found = self.snapshot.past_states.get((ti.task_id, previous))
        else:
            twins = self.by_run[earlier.id].get(ti.task_id)
            states = [self.effective[t.id] for t in twins or ()]
            found = PastTI.of(states, earlier.state) if states else None
        verdict = judge(ti.task_id, previous, found, self.dag)
        if verdict.past is Past.BLOCKED:
            self.past_blocked[verdict.reason].append(ti)
        elif verdict.past is Past.WAIT:
            self.past_waiting[WAITING_FOR_PAST].append(ti)
            if earlier is None:
                self.past_elsewhere = True
            else:
                self.past_behind.add(ti.id)
        return verdict.past is Past.OK


def _grouped(*groups: Mapping[str, Sequence[TIRow]]) -> dict[str, tuple[TIRow, ...]]:
    """The groups merged by reason, in order; empty groups left out."""
    out: dict[str, list[TIRow]] = defaultdict(list)
    for group in groups:
        for reason, tis in group.items():
            out[reason].extend(tis)
    return {reason: tuple(tis) for reason, tis in out.items() if tis}


def _finished_runs(
    runs: Sequence[RunRow],
    by_run: Mapping[int, Mapping[str, Sequence[TIRow]]],
    effective: Mapping[int, TIState],
    dag: DAG,
) -> list[tuple[RunRow, RunState]]:
    """Runs whose every (selected) TI is finished, with their outcome decided by the leaves."""
    out = []
    for run in runs:
        tis = by_run.get(run.id, {})
        if not all(effective[ti.id] in FINISHED for group in tis.values() for ti in group):
            continue
        # Leaves of the TIs the run has: with a task subset (--task-regex) a task
        # whose downstream tasks were left out decides the run's outcome too.
        leaves = [
            ti
            for tid, group in tis.items()
            if not dag.tasks[tid].downstream_ids & tis.keys()
            for ti in group
        ]
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
    decisions: Decisions, tis: Sequence[TIRow], admission: Admission, verdicts: _Verdicts
) -> Decisions:
    """Declare a deadlock only when this snapshot proves nothing can ever move."""
    if decisions.changes_anything or admission.transient or verdicts.past_elsewhere:
        return decisions
    if any(ti.state in ACTIVE or ti.state in WAITING for ti in tis):
        return decisions
    stuck = [ti for ti in tis if verdicts.effective[ti.id] not in FINISHED]
    if not stuck:
        return decisions
    reasons = _grouped(admission.held, verdicts.past_blocked)
    explained = {ti.id for group in reasons.values() for ti in group}
    rest: dict[str, list[TIRow]] = defaultdict(list)
    for ti in stuck:  # behind a blocked TI: its past, or an upstream
        if ti.id not in explained:
            behind = ti.id in verdicts.past_behind
            rest[BEHIND_BLOCKED_PAST if behind else UPSTREAM_CANNOT_RUN].append(ti)
    return replace(decisions, deadlock=_grouped(reasons, rest))
