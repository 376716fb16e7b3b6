"""The planner (pure): one snapshot in, decisions out.

Hand-built snapshots pin each decision; hypothesis checks the guarantees on
random DAGs and random consistent snapshots: no spurious deadlock (DESIGN
guarantee 4), determinism, and that only queueable TIs are queued, once,
within the limits.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pendulum
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backfill.dag import DAG
from backfill.limits import UNLIMITED
from backfill.planner import Decisions, Policy, plan
from backfill.snapshot import LimitCounts, RunRow, Snapshot, TIRow
from backfill.states import FINISHED, RunState, TIState
from backfill.task_options import DEFAULT_POOL, TriggerRule
from backfill.trigger_rules import Verdict, evaluate

START = pendulum.datetime(2024, 1, 1, tz="UTC")
NOW = datetime(2024, 6, 1, 12, tzinfo=UTC)
POLICY = Policy(max_active_runs=16)
_S = TIState
PENDING = {_S.NONE, _S.SCHEDULED}
QUEUEABLE = {_S.NONE, _S.SCHEDULED, _S.UP_FOR_RETRY, _S.UP_FOR_RESCHEDULE}
BUSY = {_S.QUEUED, _S.RUNNING, _S.UP_FOR_RETRY, _S.UP_FOR_RESCHEDULE}
UPSTREAM_CANNOT_RUN = "waiting for an upstream task that cannot run"


def noop(ctx: object) -> None:
    """A task callable; the planner never runs it."""


# -- builders --------------------------------------------------------------------


def make_dag(*chains: str, max_active_tasks: int = 16, **options: Mapping[str, Any]) -> DAG:
    """Tasks in order of first mention; "a>b>c" chains them. `options`: task_id -> options."""
    dag = DAG("p", schedule="@daily", start_date=START, max_active_tasks=max_active_tasks)
    names = [n for chain in chains for n in chain.split(">")] + list(options)
    for name in dict.fromkeys(names):
        dag.add_task(name, noop, **options.get(name, {}))
    for chain in chains:
        links = chain.split(">")
        for up, down in itertools.pairwise(links):
            dag.add_edge(dag.tasks[up], dag.tasks[down])
    return dag


def limits(
    sizes: Mapping[str, int] | None = None,
    used: Mapping[str, int] | None = None,
    dag_active: int = 0,
    task_active: Mapping[str, int] | None = None,
) -> LimitCounts:
    return LimitCounts(
        pool_slots=dict(used or {}),
        pool_sizes={DEFAULT_POOL: 128, **(sizes or {})},
        dag_active=dag_active,
        task_active=dict(task_active or {}),
    )


def snapshot(
    dag: DAG,
    *runs: Mapping[str, Any],
    only: Sequence[str] | None = None,
    queued_runs: int = 0,
    counts: LimitCounts | None = None,
    earlier_failures: bool = False,
) -> Snapshot:
    """Run i has logical date START + i days and a TI per task (or per task in `only`).

    A run maps task_id -> a state, or -> a dict of TIRow fields; unnamed TIs are `none`.
    """
    task_ids = list(only or dag.tasks)
    run_rows, rows = [], []
    for day, states in enumerate(runs):
        run_rows.append(
            RunRow(
                id=day + 1,
                run_id=f"r{day}",
                logical_date=START.add(days=day),
                state=RunState.RUNNING,
            )
        )
        for pos, task_id in enumerate(task_ids):
            rows.append(_ti(dag, day, pos, task_id, states.get(task_id, _S.NONE)))
    return Snapshot(
        runs=tuple(run_rows),
        tis=tuple(rows),
        queued_runs=queued_runs,
        limits=counts or limits(),
        earlier_failures=earlier_failures,
    )


def _ti(dag: DAG, day: int, pos: int, task_id: str, spec: Any) -> TIRow:
    values = dict(spec) if isinstance(spec, Mapping) else {"state": spec}
    options = dag.tasks[task_id].options
    values.setdefault("try_number", 0 if values["state"] in PENDING else 1)
    fields: dict[str, Any] = {
        "id": 1000 * (day + 1) + pos,
        "run_id": day + 1,
        "task_id": task_id,
        "max_tries": options.retries,
        "pool": options.pool,
        "pool_slots": options.pool_slots,
        "priority_weight": options.priority_weight,
    }
    return TIRow(**(fields | values))


def keys(tis: Iterable[TIRow]) -> list[tuple[int, str]]:
    """(day, task_id) of each TI, in the given order."""
    return [(t.run_id - 1, t.task_id) for t in tis]


def outcomes(decisions: Decisions) -> list[tuple[int, RunState]]:
    return [(run.id - 1, state) for run, state in decisions.finished_runs]


def run_plan(snap: Snapshot, dag: DAG, policy: Policy = POLICY) -> Decisions:
    return plan(snap, dag, policy, NOW)


# -- what is queued, and in which order -------------------------------------------


def test_ready_tis_are_queued_by_priority_then_date_then_topological_order() -> None:
    dag = make_dag("z", "a>b", hi={"priority_weight": 5})
    snap = snapshot(dag, {"a": _S.SUCCESS}, {})
    decided = run_plan(snap, dag)
    assert keys(decided.to_queue) == [
        (0, "hi"),
        (1, "hi"),
        (0, "z"),  # declared first: not alphabetical
        (0, "b"),
        (1, "z"),
        (1, "a"),
    ]
    assert not decided.upstream_failed
    assert not decided.skipped
    assert decided.deadlock is None


def test_nothing_is_queued_while_an_upstream_is_unfinished() -> None:
    dag = make_dag("a>b>c")
    for state in [_S.QUEUED, _S.RUNNING, _S.UP_FOR_RETRY, _S.UP_FOR_RESCHEDULE]:
        snap = snapshot(dag, {"a": {"state": state, "next_try_at": NOW + timedelta(hours=1)}})
        decided = run_plan(snap, dag)
        assert decided.to_queue == ()
        assert decided.deadlock is None
        assert not decided.changes_anything


def test_upstream_failed_propagates_down_a_chain_in_one_pass() -> None:
    dag = make_dag("a>b>c>d")
    decided = run_plan(snapshot(dag, {"a": _S.FAILED}), dag)
    assert keys(decided.upstream_failed) == [(0, "b"), (0, "c"), (0, "d")]  # upstreams first
    assert outcomes(decided) == [(0, RunState.FAILED)]
    assert decided.to_queue == ()


def test_skipped_propagates_down_a_chain_in_one_pass() -> None:
    dag = make_dag("a>b>c", "a>n", n={"trigger_rule": "none_failed"})
    decided = run_plan(snapshot(dag, {"a": _S.SKIPPED}), dag)
    assert keys(decided.skipped) == [(0, "b"), (0, "c")]
    assert keys(decided.to_queue) == [(0, "n")]  # none_failed runs when all skipped


def test_a_rule_downstream_of_a_decided_ti_sees_the_decision_in_the_same_pass() -> None:
    dag = make_dag("a>b>c", c={"trigger_rule": "all_done"})
    decided = run_plan(snapshot(dag, {"a": _S.FAILED}), dag)
    assert keys(decided.upstream_failed) == [(0, "b")]
    assert keys(decided.to_queue) == [(0, "c")]
    assert outcomes(decided) == []


# -- runs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("states", "outcome"),
    [
        ({"a": _S.FAILED, "b": _S.SUCCESS, "c": _S.SUCCESS}, RunState.SUCCESS),
        ({"a": _S.SUCCESS, "b": _S.FAILED, "c": _S.SUCCESS}, RunState.FAILED),
        ({"a": _S.SUCCESS, "b": _S.SUCCESS, "c": _S.UPSTREAM_FAILED}, RunState.FAILED),
        ({"a": _S.SUCCESS, "b": _S.SKIPPED, "c": _S.SKIPPED}, RunState.SUCCESS),
    ],
)
def test_a_run_finishes_by_its_leaves(states: dict[str, TIState], outcome: RunState) -> None:
    dag = make_dag("a>b", "c", b={"trigger_rule": "all_done"}, c={})
    decided = run_plan(snapshot(dag, states), dag)
    assert outcomes(decided) == [(0, outcome)]


def test_a_run_with_an_unfinished_ti_does_not_finish() -> None:
    dag = make_dag("a>b", b={"trigger_rule": "all_done"})
    for b in [_S.NONE, _S.QUEUED, _S.RUNNING, _S.UP_FOR_RETRY]:
        assert outcomes(run_plan(snapshot(dag, {"a": _S.FAILED, "b": b}), dag)) == []


@pytest.mark.parametrize(("a", "outcome"), [(_S.FAILED, RunState.FAILED), (_S.SUCCESS, None)])
def test_with_a_task_subset_the_last_selected_task_is_a_leaf(
    a: TIState, outcome: RunState | None
) -> None:
    dag = make_dag("a>b")
    decided = run_plan(snapshot(dag, {"a": a}, only=["a"]), dag)
    expected = RunState.SUCCESS if outcome is None else outcome
    assert outcomes(decided) == [(0, expected)]


# -- the rolling window of runs -----------------------------------------------------


def test_runs_to_start_fill_the_window_counting_runs_finishing_now() -> None:
    dag = make_dag("a")
    snap = snapshot(dag, {"a": _S.SUCCESS}, {"a": _S.RUNNING}, queued_runs=5)
    assert run_plan(snap, dag, Policy(max_active_runs=3)).runs_to_start == 2
    snap = snapshot(dag, {"a": _S.SUCCESS}, {"a": _S.RUNNING}, queued_runs=1)
    assert run_plan(snap, dag, Policy(max_active_runs=3)).runs_to_start == 1
    snap = snapshot(dag, {"a": _S.RUNNING}, {"a": _S.RUNNING}, queued_runs=5)
    assert run_plan(snap, dag, Policy(max_active_runs=2)).runs_to_start == 0
    assert run_plan(snapshot(dag, queued_runs=4), dag, Policy(max_active_runs=3)).runs_to_start == 3
    assert run_plan(snapshot(dag, {"a": _S.SUCCESS}), dag).runs_to_start == 0


@pytest.mark.parametrize(
    ("runs", "earlier"),
    [
        (({"a": _S.FAILED, "b": _S.SUCCESS}, {"a": _S.RUNNING}), False),  # a run fails now
        (({"a": _S.SUCCESS, "b": _S.FAILED}, {}), False),  # a failed TI, run still running
        (({"a": {"state": _S.UP_FOR_RETRY, "max_tries": 1}},), False),  # retries disabled
        (({"a": _S.RUNNING},), True),  # a run that finished in an earlier pass
    ],
)
def test_stop_on_failure_blocks_new_runs(runs: tuple[dict[str, Any], ...], earlier: bool) -> None:
    dag = make_dag("a", "b", b={"trigger_rule": "all_done"})
    snap = snapshot(dag, *runs, queued_runs=3, earlier_failures=earlier)
    no_retry = Policy(max_active_runs=4, retries_enabled=False)
    assert run_plan(snap, dag, no_retry).runs_to_start == 0
    go_on = Policy(max_active_runs=4, stop_on_failure=False, retries_enabled=False)
    assert run_plan(snap, dag, go_on).runs_to_start == 3


def test_a_retry_is_not_a_failure() -> None:
    dag = make_dag("a")
    snap = snapshot(dag, {"a": {"state": _S.UP_FOR_RETRY, "next_try_at": NOW}}, queued_runs=3)
    assert run_plan(snap, dag, Policy(max_active_runs=2)).runs_to_start == 1


# -- retries and reschedules --------------------------------------------------------


@pytest.mark.parametrize("state", [_S.UP_FOR_RETRY, _S.UP_FOR_RESCHEDULE])
def test_a_waiting_ti_is_queued_once_due(state: TIState) -> None:
    dag = make_dag("a")
    cases = [(NOW + timedelta(seconds=1), []), (NOW, [(0, "a")]), (None, [(0, "a")])]
    for due, expected in cases:
        decided = run_plan(snapshot(dag, {"a": {"state": state, "next_try_at": due}}), dag)
        assert keys(decided.to_queue) == expected, due
        assert decided.deadlock is None


def test_retries_disabled_fails_up_for_retry_and_its_downstream_in_one_pass() -> None:
    dag = make_dag("a>b", "r")
    later = NOW + timedelta(hours=1)
    snap = snapshot(
        dag,
        {
            "a": {"state": _S.UP_FOR_RETRY, "next_try_at": later},
            "r": {"state": _S.UP_FOR_RESCHEDULE, "next_try_at": NOW},
        },
    )
    decided = run_plan(snap, dag, Policy(max_active_runs=1, retries_enabled=False))
    assert keys(decided.retries_exhausted) == [(0, "a")]
    assert keys(decided.upstream_failed) == [(0, "b")]
    assert keys(decided.to_queue) == [(0, "r")]  # a reschedule is not a retry


# -- limits ---------------------------------------------------------------------------


def test_a_full_pool_holds_back_only_the_tis_of_that_pool() -> None:
    dag = make_dag("x", "y", x={"pool": "p"})
    snap = snapshot(dag, {}, {}, counts=limits(sizes={"p": 1}))
    decided = run_plan(snap, dag)
    assert keys(decided.to_queue) == [(0, "x"), (0, "y"), (1, "y")]
    assert {k: keys(v) for k, v in decided.waiting.items()} == {
        "pool 'p' is full (1 slots)": [(1, "x")]
    }


def test_pool_slots_count() -> None:
    dag = make_dag("x", x={"pool": "p", "pool_slots": 2})
    snap = snapshot(dag, {}, {}, {}, counts=limits(sizes={"p": 5}, used={"p": 1}))
    assert keys(run_plan(snap, dag).to_queue) == [(0, "x"), (1, "x")]


def test_max_active_tasks_and_max_active_tis_per_dag() -> None:
    dag = make_dag("x", "y", max_active_tasks=3, x={"max_active_tis_per_dag": 1})
    snap = snapshot(dag, {}, {}, {}, counts=limits(dag_active=0))
    assert keys(run_plan(snap, dag).to_queue) == [(0, "x"), (0, "y"), (1, "y")]
    snap = snapshot(dag, {}, {}, {}, counts=limits(dag_active=2, task_active={"x": 1}))
    assert keys(run_plan(snap, dag).to_queue) == [(0, "y")]


# -- deadlock -------------------------------------------------------------------------


def reasons(decided: Decisions) -> dict[str, list[tuple[int, str]]]:
    assert decided.deadlock is not None
    return {reason: keys(tis) for reason, tis in decided.deadlock.items()}


def test_deadlock_on_a_missing_pool_names_the_pool_and_the_blocked_downstream() -> None:
    dag = make_dag("a>b", "c", a={"pool": "nope"})
    decided = run_plan(snapshot(dag, {"c": _S.SUCCESS}), dag)
    found = reasons(decided)
    (pool_reason,) = (r for r in found if "nope" in r)
    assert "does not exist" in pool_reason
    assert found == {pool_reason: [(0, "a")], UPSTREAM_CANNOT_RUN: [(0, "b")]}


def test_deadlock_on_a_pool_smaller_than_pool_slots() -> None:
    dag = make_dag("a", a={"pool": "p", "pool_slots": 3})
    decided = run_plan(snapshot(dag, {}, counts=limits(sizes={"p": 2})), dag)
    (reason,) = reasons(decided)
    assert "fewer than the task's pool_slots (3)" in reason


@pytest.mark.parametrize("busy", sorted(BUSY))
def test_no_deadlock_while_anything_else_can_still_move(busy: TIState) -> None:
    dag = make_dag("a", "c", a={"pool": "nope"})
    later = NOW + timedelta(hours=1)
    decided = run_plan(snapshot(dag, {"c": {"state": busy, "next_try_at": later}}), dag)
    assert decided.deadlock is None
    assert any("nope" in reason for reason in decided.waiting)  # still explained


def test_no_deadlock_while_another_ti_is_ready() -> None:
    dag = make_dag("a", "c", a={"pool": "nope"})
    decided = run_plan(snapshot(dag, {}), dag)
    assert keys(decided.to_queue) == [(0, "c")]
    assert decided.deadlock is None


@pytest.mark.parametrize(
    "counts",
    [
        limits(sizes={"p": 2}, used={"p": 2}),  # other backfills fill the pool
        limits(sizes={"p": 2}, dag_active=16),  # max_active_tasks, held elsewhere
        limits(sizes={"p": 2}, task_active={"a": 1}),  # max_active_tis_per_dag
    ],
)
def test_no_deadlock_when_only_held_by_occupied_limits(counts: LimitCounts) -> None:
    dag = make_dag("a>b", a={"pool": "p", "max_active_tis_per_dag": 1})
    decided = run_plan(snapshot(dag, {}, counts=counts), dag)
    assert decided.to_queue == ()
    assert decided.deadlock is None
    assert decided.waiting


def test_no_deadlock_when_everything_is_finished() -> None:
    dag = make_dag("a>b")
    decided = run_plan(snapshot(dag, {"a": _S.FAILED, "b": _S.UPSTREAM_FAILED}), dag)
    assert decided.deadlock is None
    assert outcomes(decided) == [(0, RunState.FAILED)]
    assert run_plan(snapshot(dag), dag).deadlock is None  # no running run at all


# -- properties on random DAGs and consistent snapshots ------------------------------

RULES = list(TriggerRule)
# What a TI may be, given what its trigger rule says of its upstreams' states.
CONSISTENT = {
    Verdict.WAIT: [_S.NONE, _S.SCHEDULED],
    Verdict.UPSTREAM_FAILED: [_S.NONE, _S.SCHEDULED, _S.UPSTREAM_FAILED],
    Verdict.SKIP: [_S.NONE, _S.SCHEDULED, _S.SKIPPED],
    Verdict.RUN: [
        _S.NONE,
        _S.SCHEDULED,
        _S.QUEUED,
        _S.RUNNING,
        _S.SUCCESS,
        _S.FAILED,
        _S.SKIPPED,
        _S.UP_FOR_RETRY,
        _S.UP_FOR_RESCHEDULE,
    ],
}
SIZES = st.sampled_from([UNLIMITED, 0, 1, 2, 3, 5])


@st.composite
def random_dag(draw: st.DrawFn) -> DAG:
    n = draw(st.integers(1, 6))
    dag = DAG("h", schedule="@daily", start_date=START, max_active_tasks=draw(st.integers(1, 8)))
    for i in range(n):
        dag.add_task(
            f"t{i}",
            noop,
            trigger_rule=draw(st.sampled_from(RULES)),
            pool=draw(st.sampled_from([DEFAULT_POOL, "p", "gone"])),
            pool_slots=draw(st.integers(1, 3)),
            priority_weight=draw(st.integers(-1, 3)),
            max_active_tis_per_dag=draw(st.none() | st.integers(1, 2)),
            retries=draw(st.integers(0, 2)),
        )
    for j in range(n):  # edges only forward: acyclic
        for i in range(j):
            if draw(st.booleans()):
                dag.add_edge(dag.tasks[f"t{i}"], dag.tasks[f"t{j}"])
    return dag


@st.composite
def consistent_snapshot(draw: st.DrawFn, dag: DAG) -> Snapshot:
    """States drawn in topological order, each one its trigger rule allows given its
    upstreams' states: a state real execution could have reached."""
    order = dag.topological_order()
    present = draw(st.lists(st.sampled_from(order), min_size=1, unique=True))
    task_ids = [t for t in order if t in present]
    runs = []
    for _ in range(draw(st.integers(1, 3))):
        states: dict[str, Any] = {}
        for tid in task_ids:
            task = dag.tasks[tid]
            upstream = [states[u]["state"] for u in task.upstream_ids if u in states]
            state = draw(st.sampled_from(CONSISTENT[evaluate(task.options.trigger_rule, upstream)]))
            due = draw(st.sampled_from([None, NOW, NOW - timedelta(1), NOW + timedelta(1)]))
            states[tid] = {"state": state, "next_try_at": due if state in BUSY else None}
        runs.append(states)
    snap = snapshot(dag, *runs, only=task_ids, queued_runs=draw(st.integers(0, 3)))
    return Snapshot(
        runs=snap.runs,
        tis=snap.tis,
        queued_runs=snap.queued_runs,
        limits=draw(limit_counts(dag, snap.tis)),
        earlier_failures=draw(st.booleans()),
    )


@st.composite
def limit_counts(draw: st.DrawFn, dag: DAG, tis: Sequence[TIRow]) -> LimitCounts:
    """Occupancy: this snapshot's queued and running TIs plus other backfills' share."""
    active = [t for t in tis if t.state in {_S.QUEUED, _S.RUNNING}]
    used: Counter[str] = Counter()
    for t in active:
        used[t.pool] += t.pool_slots
    extra = st.integers(0, 3)
    return LimitCounts(
        pool_slots={p: used[p] + draw(extra) for p in (DEFAULT_POOL, "p")},
        pool_sizes={DEFAULT_POOL: draw(SIZES), "p": draw(SIZES)},  # "gone" never exists
        dag_active=len(active) + draw(extra),
        task_active={t: Counter(a.task_id for a in active)[t] + draw(extra) for t in dag.tasks},
    )


@st.composite
def planned(draw: st.DrawFn) -> tuple[DAG, Snapshot, Policy]:
    dag = draw(random_dag())
    policy = Policy(
        max_active_runs=draw(st.integers(1, 4)),
        stop_on_failure=draw(st.booleans()),
        retries_enabled=draw(st.booleans()),
    )
    return dag, draw(consistent_snapshot(dag)), policy


def _ready(dag: DAG, snap: Snapshot) -> list[TIRow]:
    """Pending TIs whose rule says run and whose pool exists and is big enough."""
    by_run: dict[int, dict[str, TIState]] = {}
    for t in snap.tis:
        by_run.setdefault(t.run_id, {})[t.task_id] = t.state
    out = []
    for t in snap.tis:
        if t.state not in PENDING:
            continue
        task = dag.tasks[t.task_id]
        states = by_run[t.run_id]
        upstream = [states[u] for u in task.upstream_ids if u in states]
        size = snap.limits.pool_sizes.get(t.pool)
        fits = size is not None and (size == UNLIMITED or t.pool_slots <= size)
        if fits and evaluate(task.options.trigger_rule, upstream) is Verdict.RUN:
            out.append(t)
    return out


@settings(max_examples=400, deadline=None)
@given(planned())
def test_no_deadlock_while_anything_is_busy_or_ready(case: tuple[DAG, Snapshot, Policy]) -> None:
    dag, snap, policy = case
    decided = plan(snap, dag, policy, NOW)
    busy = [t for t in snap.tis if t.state in BUSY]
    ready = _ready(dag, snap)
    if busy or ready:
        assert decided.deadlock is None, (busy, ready, decided.deadlock)
    if decided.deadlock is not None:
        assert decided.to_queue == ()
        assert all(t.state in PENDING or t.state in FINISHED for t in snap.tis)


@settings(max_examples=200, deadline=None)
@given(planned())
def test_the_plan_is_deterministic(case: tuple[DAG, Snapshot, Policy]) -> None:
    dag, snap, policy = case
    assert plan(snap, dag, policy, NOW) == plan(snap, dag, policy, NOW)


@settings(max_examples=300, deadline=None)
@given(planned())
def test_only_queueable_tis_are_queued_once_within_the_limits(
    case: tuple[DAG, Snapshot, Policy],
) -> None:
    dag, snap, policy = case
    decided = plan(snap, dag, policy, NOW)
    ids = [t.id for t in decided.to_queue]
    assert len(ids) == len(set(ids))
    for t in decided.to_queue:
        assert t.state in QUEUEABLE
        if t.state not in PENDING:  # a retry or reschedule: only once due
            assert t.next_try_at is None or t.next_try_at <= NOW
        assert not (t.state is _S.UP_FOR_RETRY and not policy.retries_enabled)
    decided_now = [*decided.upstream_failed, *decided.skipped]
    assert all(t.state in PENDING for t in decided_now)
    assert not {t.id for t in decided_now} & set(ids)
    _assert_within_limits(dag, snap.limits, decided.to_queue)


def _assert_within_limits(dag: DAG, counts: LimitCounts, queued: Sequence[TIRow]) -> None:
    slots: Counter[str] = Counter()
    per_task: Counter[str] = Counter()
    for t in queued:
        slots[t.pool] += t.pool_slots
        per_task[t.task_id] += 1
    for pool, added in slots.items():
        size = counts.pool_sizes[pool]
        assert size == UNLIMITED or counts.pool_slots.get(pool, 0) + added <= size
    if queued:
        assert counts.dag_active + len(queued) <= dag.max_active_tasks
    for task_id, added in per_task.items():
        cap = dag.tasks[task_id].options.max_active_tis_per_dag
        assert cap is None or counts.task_active.get(task_id, 0) + added <= cap
