"""The planner (pure): one snapshot in, decisions out.

Hand-built snapshots pin each decision; hypothesis checks the guarantees on
random DAGs and random consistent snapshots: no spurious deadlock (DESIGN
guarantee 4), determinism, and that only queueable TIs are queued, once,
within the limits.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pendulum
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.factories import limit_counts

from backfill.model.dag import DAG
from backfill.model.states import FINISHED, RUN_FINISHED, RunState, TIState
from backfill.model.task_options import DEFAULT_POOL, TriggerRule
from backfill.planning.depends import BEHIND_BLOCKED_PAST, WAITING_FOR_PAST
from backfill.planning.limits import UNLIMITED
from backfill.planning.pass_planner import Decisions, Policy, plan
from backfill.planning.run_options import Dependencies, Order
from backfill.planning.snapshot import LimitCounts, PastTI, RunRow, Snapshot, TIRow
from backfill.planning.trigger_rules import Verdict, evaluate

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


def snapshot(
    dag: DAG,
    *runs: Mapping[str, Any],
    only: Sequence[str] | None = None,
    queued_runs: int = 0,
    counts: LimitCounts | None = None,
    earlier_failures: bool = False,
    days: Sequence[int] | None = None,
    past: Mapping[tuple[str, int], PastTI] | None = None,
) -> Snapshot:
    """Run i has logical date START + days[i] days (default: i) and a TI per task (or per
    task in `only`); `past` maps (task_id, day) to a TI of a run outside the snapshot.

    A run maps task_id -> a state, or -> a dict of TIRow fields; unnamed TIs are `none`.
    """
    task_ids = list(only or dag.tasks)
    run_rows, rows = [], []
    for i, states in enumerate(runs):
        day = i if days is None else days[i]
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
        limits=counts or limit_counts(),
        earlier_failures=earlier_failures,
        past_states={(t, START.add(days=d)): v for (t, d), v in (past or {}).items()},
    )


def _ti(dag: DAG, day: int, pos: int, task_id: str, spec: Any) -> TIRow:
    values = dict(spec) if isinstance(spec, Mapping) else {"state": spec}
    options = dag.tasks[task_id].options
    values.setdefault("try_number", 0 if values["state"] in PENDING else 1)
    fields: dict[str, Any] = {
        "id": 1000 * (day + 1) + pos,
        "dag_run_id": day + 1,
        "task_id": task_id,
        "max_tries": options.retries,
        "pool": options.pool,
        "pool_slots": options.pool_slots,
        "priority_weight": options.priority_weight,
    }
    return TIRow(**(fields | values))


def keys(tis: Iterable[TIRow]) -> list[tuple[int, str]]:
    """(day, task_id) of each TI, in the given order."""
    return [(t.dag_run_id - 1, t.task_id) for t in tis]


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
    snap = snapshot(dag, {}, {}, counts=limit_counts(sizes={"p": 1}))
    decided = run_plan(snap, dag)
    assert keys(decided.to_queue) == [(0, "x"), (0, "y"), (1, "y")]
    assert {k: keys(v) for k, v in decided.waiting.items()} == {
        "pool 'p' is full (1 slots)": [(1, "x")]
    }


def test_pool_slots_count() -> None:
    dag = make_dag("x", x={"pool": "p", "pool_slots": 2})
    snap = snapshot(dag, {}, {}, {}, counts=limit_counts(sizes={"p": 5}, used={"p": 1}))
    assert keys(run_plan(snap, dag).to_queue) == [(0, "x"), (1, "x")]


def test_max_active_tasks_and_max_active_tis_per_dag() -> None:
    dag = make_dag("x", "y", max_active_tasks=3, x={"max_active_tis_per_dag": 1})
    snap = snapshot(dag, {}, {}, {}, counts=limit_counts(dag_active=0))
    assert keys(run_plan(snap, dag).to_queue) == [(0, "x"), (0, "y"), (1, "y")]
    snap = snapshot(dag, {}, {}, {}, counts=limit_counts(dag_active=2, task_active={"x": 1}))
    assert keys(run_plan(snap, dag).to_queue) == [(0, "y")]


# -- policies ------------------------------------------------------------------------


def test_backwards_queues_by_priority_then_newest_date() -> None:
    dag = make_dag("z", "a>b", hi={"priority_weight": 5})
    snap = snapshot(dag, {"a": _S.SUCCESS}, {})
    decided = run_plan(snap, dag, Policy(max_active_runs=16, order=Order.BACKWARD))
    assert keys(decided.to_queue) == [(1, "hi"), (0, "hi"), (1, "z"), (1, "a"), (0, "z"), (0, "b")]


def test_ignore_dependencies_makes_every_pending_ti_ready() -> None:
    dag = make_dag("a>b>c", "a>n", n={"trigger_rule": "all_failed"})
    snap = snapshot(dag, {"a": _S.FAILED})
    ignore = Policy(max_active_runs=1, dependencies=Dependencies.IGNORE)
    decided = run_plan(snap, dag, ignore)
    assert sorted(keys(decided.to_queue)) == [(0, "b"), (0, "c"), (0, "n")]
    assert (decided.upstream_failed, decided.skipped) == ((), ())
    assert keys(run_plan(snap, dag).upstream_failed) == [(0, "b"), (0, "c")]  # enforced


def test_ignore_dependencies_still_holds_depends_on_past() -> None:
    dag = make_dag("a>t", t={"depends_on_past": True})
    snap = snapshot(dag, {"a": _S.FAILED}, days=[3])  # day 2 has no run
    decided = run_plan(snap, dag, Policy(max_active_runs=1, dependencies=Dependencies.IGNORE))
    assert decided.to_queue == ()
    assert [r for r in reasons(decided) if "depends_on_past" in r]


def test_unselected_tis_are_absent() -> None:
    dag = make_dag("a>b>c", "x")
    selected = frozenset({"b", "c"})
    policy = Policy(max_active_runs=1, selected=selected)
    # a (not selected) never ran, or failed: b runs regardless; x is never queued.
    for a in [_S.NONE, _S.FAILED, _S.UPSTREAM_FAILED]:
        decided = run_plan(snapshot(dag, {"a": a}), dag, policy)
        assert keys(decided.to_queue) == [(0, "b")]
        assert (decided.upstream_failed, decided.skipped, decided.finished_runs) == ((), (), ())
    # The run ends with its selected TIs, whatever the others' states; c is its leaf.
    done = {"a": _S.NONE, "b": _S.SUCCESS, "c": _S.SUCCESS, "x": _S.FAILED}
    assert outcomes(run_plan(snapshot(dag, done), dag, policy)) == [(0, RunState.SUCCESS)]
    failed = done | {"c": _S.FAILED, "x": _S.SUCCESS}
    assert outcomes(run_plan(snapshot(dag, failed), dag, policy)) == [(0, RunState.FAILED)]
    # A selected task whose downstream is not selected is a leaf.
    only_b = Policy(max_active_runs=1, selected=frozenset({"b"}))
    b_failed = {"b": _S.FAILED, "c": _S.NONE}
    assert outcomes(run_plan(snapshot(dag, b_failed), dag, only_b)) == [(0, RunState.FAILED)]


def test_unselected_tis_never_make_or_prevent_a_deadlock() -> None:
    dag = make_dag("a>b", "x", x={"pool": "nope"})
    policy = Policy(max_active_runs=1, selected=frozenset({"a", "b"}))
    # x would be held forever (missing pool) and is running elsewhere: neither counts.
    decided = run_plan(snapshot(dag, {"a": _S.SUCCESS, "b": _S.SUCCESS}), dag, policy)
    assert (decided.deadlock, outcomes(decided)) == (None, [(0, RunState.SUCCESS)])
    stuck = snapshot(dag, {"a": _S.SUCCESS, "b": _S.SUCCESS, "x": _S.RUNNING}, queued_runs=1)
    assert run_plan(stuck, dag, policy).runs_to_start == 1


@pytest.mark.parametrize("on_failure", ["stop", "continue"])
def test_continue_on_failure_keeps_starting_runs(on_failure: str) -> None:
    dag = make_dag("a>b")
    snap = snapshot(dag, {"a": _S.FAILED}, queued_runs=5, earlier_failures=True)
    policy = Policy(max_active_runs=3, stop_on_failure=on_failure == "stop")
    decided = run_plan(snap, dag, policy)
    assert keys(decided.upstream_failed) == [(0, "b")]
    assert outcomes(decided) == [(0, RunState.FAILED)]
    assert decided.runs_to_start == (0 if on_failure == "stop" else 3)


def test_disabled_retries_fail_a_retry_even_when_due() -> None:
    dag = make_dag("a", a={"retries": 3})
    retry = {"a": {"state": _S.UP_FOR_RETRY, "next_try_at": NOW - timedelta(1)}}
    enabled = run_plan(snapshot(dag, retry), dag)
    assert keys(enabled.to_queue) == [(0, "a")]
    disabled = run_plan(snapshot(dag, retry), dag, Policy(max_active_runs=1, retries_enabled=False))
    assert (disabled.to_queue, keys(disabled.retries_exhausted)) == ((), [(0, "a")])
    assert outcomes(disabled) == [(0, RunState.FAILED)]


# -- depends_on_past --------------------------------------------------------------------

DOP = {"depends_on_past": True}


def test_the_dags_first_date_runs_without_a_past() -> None:
    dag = make_dag("t", t=DOP)
    decided = run_plan(snapshot(dag, {}, {}), dag)  # days 0 (the DAG's start) and 1
    assert keys(decided.to_queue) == [(0, "t")]  # day 1 waits for day 0
    assert {k: keys(v) for k, v in decided.waiting.items()} == {WAITING_FOR_PAST: [(1, "t")]}
    assert decided.deadlock is None


@pytest.mark.parametrize("state", [_S.SUCCESS, _S.SKIPPED])
def test_a_date_runs_once_its_past_succeeded_here_or_elsewhere(state: TIState) -> None:
    dag = make_dag("t", "u", t=DOP)
    here = snapshot(dag, {"t": state, "u": _S.RUNNING}, {}, days=[4, 5])
    assert keys(run_plan(here, dag).to_queue) == [(5, "t"), (5, "u")]
    elsewhere = snapshot(dag, {}, days=[5], past={("t", 4): PastTI(state, RunState.SUCCESS)})
    assert keys(run_plan(elsewhere, dag).to_queue) == [(5, "t"), (5, "u")]


def test_a_past_decided_in_this_pass_is_seen_by_the_next_date() -> None:
    dag = make_dag("a>t", t=DOP)
    decided = run_plan(snapshot(dag, {"a": _S.FAILED}, {"a": _S.SUCCESS}, days=[0, 1]), dag)
    assert keys(decided.upstream_failed) == [(0, "t")]
    blocked = [r for r in decided.waiting if r.startswith("depends_on_past: task 't' ended")]
    assert blocked == [
        "depends_on_past: task 't' ended upstream_failed at 2024-01-01T00:00:00+00:00; "
        "run that date again first (--reprocess failed)"
    ]
    assert decided.to_queue == ()
    # A past this pass skips has ended well: the next date runs in the same pass.
    on_failure = make_dag("a>t", t=DOP | {"trigger_rule": "all_failed"})
    skip_then_run = snapshot(on_failure, {"a": _S.SUCCESS}, {"a": _S.FAILED}, days=[1, 2])
    decided = run_plan(skip_then_run, on_failure)
    assert (keys(decided.skipped), keys(decided.to_queue)) == ([(1, "t")], [(2, "t")])


def test_a_gap_at_the_range_start_deadlocks_with_the_hint() -> None:
    dag = make_dag("t>after", t=DOP)
    decided = run_plan(snapshot(dag, {}, {}, days=[3, 4]), dag)  # day 2 never ran
    found = reasons(decided)
    gap = next(r for r in found if "has no run" in r)
    assert gap.startswith("depends_on_past: task 't' has no run at 2024-01-03T00:00:00+00:00")
    assert "--ignore-first-depends-on-past" in gap
    assert found == {
        gap: [(3, "t")],
        BEHIND_BLOCKED_PAST: [(4, "t")],
        UPSTREAM_CANNOT_RUN: [(3, "after"), (4, "after")],
    }


def test_ignore_first_lifts_the_rule_on_that_date_only() -> None:
    dag = make_dag("t", t=DOP)
    policy = Policy(max_active_runs=2, past_ignored_on=START.add(days=3))
    decided = run_plan(snapshot(dag, {}, {}, days=[3, 4]), dag, policy)
    assert keys(decided.to_queue) == [(3, "t")]
    assert decided.deadlock is None
    assert keys(decided.waiting[WAITING_FOR_PAST]) == [(4, "t")]
    # Ignored on day 4: day 4 runs, day 3 still has no past.
    later = Policy(max_active_runs=2, past_ignored_on=START.add(days=4))
    decided = run_plan(snapshot(dag, {}, {}, days=[3, 4]), dag, later)
    assert keys(decided.to_queue) == [(4, "t")]
    ((gap, held),) = decided.waiting.items()
    assert ("has no run at 2024-01-03" in gap, keys(held)) == (True, [(3, "t")])


@pytest.mark.parametrize(
    ("past", "blocked"),
    [
        (PastTI(_S.FAILED, RunState.FAILED), "ended failed"),
        (PastTI(_S.NONE, RunState.FAILED), "never ended"),
        (PastTI(_S.REMOVED, RunState.SUCCESS), "has no run"),
    ],
)
def test_a_past_that_cannot_end_well_elsewhere_deadlocks(past: PastTI, blocked: str) -> None:
    dag = make_dag("t", t=DOP)
    decided = run_plan(snapshot(dag, {}, days=[2], past={("t", 1): past}), dag)
    (reason,) = reasons(decided)
    assert reason.startswith("depends_on_past:")
    assert blocked in reason


@pytest.mark.parametrize(
    "past",
    [
        PastTI(_S.RUNNING, RunState.RUNNING),  # another backfill runs the previous date
        PastTI(_S.NONE, RunState.QUEUED),  # ...or has it in its backlog
        PastTI(_S.UP_FOR_RETRY, RunState.RUNNING),
        PastTI(_S.QUEUED, RunState.FAILED),  # a claimed try still ends
    ],
)
def test_a_full_window_waiting_for_a_past_elsewhere_is_not_a_deadlock(past: PastTI) -> None:
    dag = make_dag("t", t=DOP)
    # Both window slots wait: day 2 for day 1 (elsewhere), day 3 for day 2.
    snap = snapshot(dag, {}, {}, days=[2, 3], past={("t", 1): past}, queued_runs=3)
    decided = run_plan(snap, dag, Policy(max_active_runs=2))
    assert (decided.to_queue, decided.runs_to_start, decided.deadlock) == ((), 0, None)
    assert keys(decided.waiting[WAITING_FOR_PAST]) == [(2, "t"), (3, "t")]


def test_a_depends_on_past_task_still_follows_its_trigger_rule() -> None:
    dag = make_dag("a>t>b", t=DOP)
    # The past is missing, but an upstream failed: upstream_failed, not blocked.
    decided = run_plan(snapshot(dag, {"a": _S.FAILED}, days=[5]), dag)
    assert keys(decided.upstream_failed) == [(5, "t"), (5, "b")]
    assert outcomes(decided) == [(5, RunState.FAILED)]


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
    decided = run_plan(snapshot(dag, {}, counts=limit_counts(sizes={"p": 2})), dag)
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
        limit_counts(sizes={"p": 2}, used={"p": 2}),  # other backfills fill the pool
        limit_counts(sizes={"p": 2}, dag_active=16),  # max_active_tasks, held elsewhere
        limit_counts(sizes={"p": 2}, task_active={"a": 1}),  # max_active_tis_per_dag
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
def random_dag(draw: st.DrawFn, *, pools: Sequence[str] = (DEFAULT_POOL, "p", "gone")) -> DAG:
    n = draw(st.integers(1, 6))
    dag = DAG("h", schedule="@daily", start_date=START, max_active_tasks=draw(st.integers(1, 8)))
    for i in range(n):
        dag.add_task(
            f"t{i}",
            noop,
            trigger_rule=draw(st.sampled_from(RULES)),
            pool=draw(st.sampled_from(pools)),
            pool_slots=draw(st.integers(1, 3)),
            priority_weight=draw(st.integers(-1, 3)),
            max_active_tis_per_dag=draw(st.none() | st.integers(1, 2)),
            retries=draw(st.integers(0, 2)),
            depends_on_past=draw(st.booleans()),
        )
    for j in range(n):  # edges only forward: acyclic
        for i in range(j):
            if draw(st.booleans()):
                dag.add_edge(dag.tasks[f"t{i}"], dag.tasks[f"t{j}"])
    return dag


PAST_TIS = st.builds(PastTI, st.sampled_from(list(TIState)), st.sampled_from(list(RunState)))


@st.composite
def consistent_snapshot(draw: st.DrawFn, dag: DAG) -> Snapshot:
    """States drawn in topological order, each one its trigger rule allows given its
    upstreams' states: a state real execution could have reached. Runs fall on a few
    days, with gaps; the past of a gap is missing or in any state, in any run state."""
    order = dag.topological_order()
    present = draw(st.lists(st.sampled_from(order), min_size=1, unique=True))
    task_ids = [t for t in order if t in present]
    days = sorted(draw(st.lists(st.integers(0, 4), min_size=1, max_size=3, unique=True)))
    quiet = draw(st.booleans())  # nothing queued, running or waiting: a deadlock is possible
    runs = []
    for _ in days:
        states: dict[str, Any] = {}
        for tid in task_ids:
            task = dag.tasks[tid]
            upstream = [states[u]["state"] for u in task.upstream_ids if u in states]
            allowed = CONSISTENT[evaluate(task.options.trigger_rule, upstream)]
            state = draw(st.sampled_from([s for s in allowed if not (quiet and s in BUSY)]))
            due = draw(st.sampled_from([None, NOW, NOW - timedelta(1), NOW + timedelta(1)]))
            states[tid] = {"state": state, "next_try_at": due if state in BUSY else None}
        runs.append(states)
    gaps = [d for d in range(days[-1]) if d not in days]
    past = {(t, d): draw(st.none() | PAST_TIS) for t in task_ids for d in gaps}
    snap = snapshot(
        dag,
        *runs,
        only=task_ids,
        queued_runs=draw(st.integers(0, 3)),
        days=days,
        past={k: v for k, v in past.items() if v is not None},
    )
    return replace(
        snap, limits=draw(any_limit_counts(dag, snap.tis)), earlier_failures=draw(st.booleans())
    )


@st.composite
def any_limit_counts(draw: st.DrawFn, dag: DAG, tis: Sequence[TIRow]) -> LimitCounts:
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
def policies(draw: st.DrawFn, dag: DAG, *, order: Order | None = None) -> Policy:
    every = sorted(dag.tasks)
    return Policy(
        max_active_runs=draw(st.integers(1, 4)),
        stop_on_failure=draw(st.booleans()),
        retries_enabled=draw(st.booleans()),
        order=order or draw(st.sampled_from(list(Order))),
        dependencies=draw(st.sampled_from(list(Dependencies))),
        selected=draw(st.none() | st.sets(st.sampled_from(every)).map(frozenset)),
        past_ignored_on=draw(st.none() | st.integers(0, 4).map(lambda d: START.add(days=d))),
    )


@st.composite
def planned(draw: st.DrawFn) -> tuple[DAG, Snapshot, Policy]:
    dag = draw(random_dag())
    return dag, draw(consistent_snapshot(dag)), draw(policies(dag))


def _past(
    dag: DAG, snap: Snapshot, policy: Policy, ti: TIRow, skipped_now: Set[int] = frozenset()
) -> str:
    """Independently of the planner: "ok", "no" or "elsewhere" (a past outside the
    snapshot that may still end well) for the depends_on_past of a pending TI.
    `skipped_now`: the TIs the pass skips; a past it skips is a past that skipped, as
    the planner judges a date after the dates before it in the same pass."""
    date = next(r.logical_date for r in snap.runs if r.id == ti.dag_run_id)
    previous = date - timedelta(days=1)  # the test DAGs are @daily from START
    if not dag.tasks[ti.task_id].options.depends_on_past:
        return "ok"
    if previous < START or date == policy.past_ignored_on:
        return "ok"
    here = [r.id for r in snap.runs if r.logical_date == previous]
    if here:
        twins = [t for t in snap.tis if t.dag_run_id == here[0] and t.task_id == ti.task_id]
        well = {_S.SUCCESS, _S.SKIPPED}
        return "ok" if any(t.state in well or t.id in skipped_now for t in twins) else "no"
    found = snap.past_states.get((ti.task_id, previous))
    if found is None or found.state in {_S.FAILED, _S.UPSTREAM_FAILED, _S.REMOVED}:
        return "no"
    if found.state in {_S.SUCCESS, _S.SKIPPED}:
        return "ok"
    ended = found.run_state in {RunState.SUCCESS, RunState.FAILED}
    return "no" if ended and found.state not in {_S.QUEUED, _S.RUNNING} else "elsewhere"


def _runnable(
    dag: DAG, snap: Snapshot, policy: Policy, skipped_now: Set[int] = frozenset()
) -> dict[str, list[TIRow]]:
    """Selected pending TIs whose upstreams let them run, by what their past says
    (`skipped_now` as for `_past`); under "ok" only those whose pool exists and is big
    enough."""
    selected = [t for t in snap.tis if policy.selects(t.task_id)]
    by_run: dict[int, dict[str, TIState]] = {}
    for t in selected:
        by_run.setdefault(t.dag_run_id, {})[t.task_id] = t.state
    out: dict[str, list[TIRow]] = {"ok": [], "no": [], "elsewhere": []}
    for t in selected:
        if t.state not in PENDING:
            continue
        task = dag.tasks[t.task_id]
        upstream = [by_run[t.dag_run_id][u] for u in task.upstream_ids if u in by_run[t.dag_run_id]]
        rule = evaluate(task.options.trigger_rule, upstream)
        if policy.dependencies is Dependencies.ENFORCE and rule is not Verdict.RUN:
            continue
        past = _past(dag, snap, policy, t, skipped_now)
        size = snap.limits.pool_sizes.get(t.pool)
        fits = size is not None and (size == UNLIMITED or t.pool_slots <= size)
        if past != "ok" or fits:
            out[past].append(t)
    return out


@settings(max_examples=500, deadline=None)
@given(planned())
def test_no_deadlock_while_anything_is_busy_ready_or_waiting_elsewhere(
    case: tuple[DAG, Snapshot, Policy],
) -> None:
    dag, snap, policy = case
    decided = plan(snap, dag, policy, NOW)
    selected = [t for t in snap.tis if policy.selects(t.task_id)]
    busy = [t for t in selected if t.state in BUSY]
    runnable = _runnable(dag, snap, policy, {t.id for t in decided.skipped})
    if busy or runnable["ok"] or runnable["elsewhere"]:
        assert decided.deadlock is None, (busy, runnable, decided.deadlock)
    if decided.deadlock is not None:
        assert decided.to_queue == ()
        assert all(t.state in PENDING or t.state in FINISHED for t in selected)
        # Every unfinished selected TI is explained, once, and nothing else is.
        blocked = [t.id for group in decided.deadlock.values() for t in group]
        assert all(decided.deadlock.values())
        assert sorted(blocked) == sorted(t.id for t in selected if t.state not in FINISHED)
        for t in runnable["no"]:
            assert any(
                t in group for r, group in decided.deadlock.items() if "depends_on_past" in r
            )


@settings(max_examples=300, deadline=None)
@given(planned())
def test_every_runnable_ti_is_queued_or_held_by_a_limit(case: tuple[DAG, Snapshot, Policy]) -> None:
    dag, snap, policy = case
    decided = plan(snap, dag, policy, NOW)
    by_limit = {
        t.id for reason, group in decided.waiting.items() for t in group if "pool" in reason
    } | {t.id for reason, group in decided.waiting.items() for t in group if "max_active" in reason}
    queued = {t.id for t in decided.to_queue}
    for t in _runnable(dag, snap, policy, {t.id for t in decided.skipped})["ok"]:
        assert t.id in queued or t.id in by_limit, t


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
        else:  # depends_on_past holds, whatever else is ignored
            assert _past(dag, snap, policy, t, {t.id for t in decided.skipped}) == "ok"
        assert not (t.state is _S.UP_FOR_RETRY and not policy.retries_enabled)
    decided_now = [*decided.upstream_failed, *decided.skipped]
    assert all(t.state in PENDING for t in decided_now)
    assert not {t.id for t in decided_now} & set(ids)
    touched = [*decided.to_queue, *decided_now, *decided.retries_exhausted]
    assert all(policy.selects(t.task_id) for t in touched)
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


# -- a whole backfill, simulated pass after pass ----------------------------------------


@dataclass
class SimRun:
    day: int
    state: RunState = RunState.QUEUED
    tis: dict[str, TIState] = field(default_factory=dict)
    ours: bool = True  # else: another backfill's, running the day before the range


class Simulation:
    """A backfill of consecutive days in a fake store: each pass plans from a snapshot
    of the running runs, then applies the decisions as the store would; queued TIs run
    and end success or skipped, some at once, some passes later. With `foreign`, the
    day before the range is being run by another backfill (its tries end later)."""

    def __init__(self, dag: DAG, days: Sequence[int], policy: Policy, *, foreign: bool) -> None:
        self.dag, self.policy = dag, policy
        self.runs = [SimRun(d, tis=dict.fromkeys(dag.tasks, _S.NONE)) for d in days]
        if foreign:
            before = SimRun(days[0] - 1, RunState.RUNNING, dict.fromkeys(dag.tasks, _S.RUNNING))
            self.runs.insert(0, replace(before, ours=False))

    def snapshot(self) -> Snapshot:
        running = [r for r in self.runs if r.ours and r.state is RunState.RUNNING]
        rows = [
            TIRow(
                id=1000 * (r.day + 1) + pos,
                dag_run_id=r.day + 1,
                task_id=tid,
                state=r.tis[tid],
                try_number=0,
                max_tries=0,
                pool=DEFAULT_POOL,
                pool_slots=1,
                priority_weight=1,
            )
            for r in running
            for pos, tid in enumerate(self.dag.tasks)
        ]
        past = {
            (tid, START.add(days=r.day)): PastTI(state, r.state)
            for r in self.runs
            if r not in running
            for tid, state in r.tis.items()
        }
        return Snapshot(
            runs=tuple(
                RunRow(
                    id=r.day + 1,
                    run_id=f"r{r.day}",
                    logical_date=START.add(days=r.day),
                    state=r.state,
                )
                for r in running
            ),
            tis=tuple(rows),
            queued_runs=sum(r.ours and r.state is RunState.QUEUED for r in self.runs),
            limits=limit_counts(sizes={DEFAULT_POOL: UNLIMITED}),
            past_states=past,
        )

    def apply(self, decided: Decisions, ends: Callable[[bool], TIState | None]) -> None:
        run_of = {r.day + 1: r for r in self.runs}
        for t in decided.upstream_failed:
            run_of[t.dag_run_id].tis[t.task_id] = _S.UPSTREAM_FAILED
        for t in decided.skipped:
            run_of[t.dag_run_id].tis[t.task_id] = _S.SKIPPED
        for t in decided.to_queue:
            run_of[t.dag_run_id].tis[t.task_id] = _S.RUNNING
        for run, outcome in decided.finished_runs:
            run_of[run.id].state = outcome
        waiting = [r for r in self.runs if r.ours and r.state is RunState.QUEUED]
        if self.policy.order is Order.BACKWARD:
            waiting.reverse()
        for r in waiting[: decided.runs_to_start]:
            r.state = RunState.RUNNING
        must = True  # the workers: the oldest try ends now, the others now or later
        for r in self.runs:
            for tid, state in r.tis.items():
                if state is _S.RUNNING:
                    r.tis[tid] = ends(must) or _S.RUNNING
                    must = False

    @property
    def done(self) -> bool:
        return all(r.state in RUN_FINISHED for r in self.runs if r.ours)


@settings(max_examples=150, deadline=None)
@given(dag=random_dag(pools=[DEFAULT_POOL]), data=st.data())
def test_a_backfill_whose_tries_succeed_never_deadlocks_and_ends(
    dag: DAG, data: st.DataObject
) -> None:
    """With depends_on_past tasks and a rolling window that is often full of runs
    waiting for their past, here or in another backfill: no deadlock is ever
    declared, and every run ends."""
    first = data.draw(st.integers(0, 3), label="first day")
    foreign = first > 0 and data.draw(st.booleans(), label="the day before runs elsewhere")
    count = data.draw(st.integers(1, 6), label="days")
    has_past = any(t.options.depends_on_past for t in dag.tasks.values())
    order = Order.FORWARD if has_past else data.draw(st.sampled_from(list(Order)))  # as plan.py
    policy = replace(
        data.draw(policies(dag, order=order), label="policy"),
        # The range's first date has a past (the DAG's first date, or the day before
        # that another backfill runs) or ignores it.
        past_ignored_on=START.add(days=first) if first and not foreign else None,
        retries_enabled=True,
    )
    sim = Simulation(dag, range(first, first + count), policy, foreign=foreign)
    later = st.sampled_from([None, None, _S.SUCCESS, _S.SKIPPED])
    now = st.sampled_from([_S.SUCCESS, _S.SKIPPED])
    for _ in range(20 * count * (len(dag.tasks) + 1)):
        decided = plan(sim.snapshot(), dag, policy, NOW)
        assert decided.deadlock is None, decided.deadlock
        sim.apply(decided, lambda must: data.draw(now if must else later))
        if sim.done:
            break
    assert sim.done, [(r.day, r.state, r.tis) for r in sim.runs]
