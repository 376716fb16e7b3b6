"""Admission of ready TIs under pools and concurrency limits (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pendulum
import pytest
from support.factories import limit_counts

from backfill.model.dag import DAG
from backfill.model.states import TIState
from backfill.model.task_options import DEFAULT_POOL
from backfill.planning.limits import UNLIMITED, admit
from backfill.planning.snapshot import LimitCounts, TIRow


def noop(ctx: object) -> None:
    """A task callable; admission never runs it."""


def make_dag(max_active_tasks: int = 16, **per_task: Mapping[str, Any]) -> DAG:
    dag = DAG(
        "d",
        schedule="@daily",
        start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
        max_active_tasks=max_active_tasks,
    )
    for task_id, options in per_task.items():
        dag.add_task(task_id, noop, **options)
    return dag


def ti(ti_id: int, task_id: str, pool: str = DEFAULT_POOL, pool_slots: int = 1) -> TIRow:
    return TIRow(
        id=ti_id,
        dag_run_id=1,
        task_id=task_id,
        state=TIState.NONE,
        try_number=0,
        max_tries=0,
        pool=pool,
        pool_slots=pool_slots,
        priority_weight=1,
    )


def ids(tis: Any) -> list[int]:
    return [t.id for t in tis]


def test_everything_fits_and_keeps_the_given_order() -> None:
    dag = make_dag(a={}, b={})
    ready = [ti(3, "b"), ti(1, "a"), ti(2, "a")]
    result = admit(ready, dag, limit_counts())
    assert ids(result.admitted) == [3, 1, 2]
    assert result.held == {}
    assert not result.transient


def test_a_full_pool_holds_back_only_its_own_tis() -> None:
    dag = make_dag(a={"pool": "p"}, b={})
    ready = [ti(1, "a", "p"), ti(2, "a", "p"), ti(3, "b"), ti(4, "a", "p")]
    result = admit(ready, dag, limit_counts(sizes={"p": 2}, used={"p": 1}))
    assert ids(result.admitted) == [1, 3]
    assert {k: ids(v) for k, v in result.held.items()} == {"pool 'p' is full (2 slots)": [2, 4]}
    assert result.transient


def test_pool_slots_count_and_a_held_ti_takes_no_capacity() -> None:
    dag = make_dag(big={"pool": "p", "pool_slots": 3}, small={"pool": "p", "pool_slots": 2})
    ready = [ti(1, "big", "p", 3), ti(2, "small", "p", 2), ti(3, "small", "p", 2)]
    result = admit(ready, dag, limit_counts(sizes={"p": 4}, used={"p": 2}))
    # 2 used: the 3-slot TI does not fit, the first 2-slot one does (4 of 4), the next not.
    assert ids(result.admitted) == [2]
    assert ids(result.held["pool 'p' is full (4 slots)"]) == [1, 3]


def test_an_unlimited_pool_is_never_full() -> None:
    dag = make_dag(a={"pool": "u", "pool_slots": 50})
    ready = [ti(i, "a", "u", 50) for i in range(5)]
    result = admit(ready, dag, limit_counts(sizes={"u": UNLIMITED}, used={"u": 10_000}))
    assert ids(result.admitted) == list(range(5))


def test_a_missing_pool_holds_permanently_and_says_how_to_fix_it() -> None:
    dag = make_dag(a={"pool": "nope"}, b={})
    result = admit([ti(1, "a", "nope"), ti(2, "b")], dag, limit_counts())
    assert ids(result.admitted) == [2]
    (reason,) = result.held
    assert "pool 'nope' does not exist" in reason
    assert "backfill pools set nope SLOTS" in reason
    assert not result.transient


def test_a_pool_smaller_than_pool_slots_holds_permanently() -> None:
    dag = make_dag(a={"pool": "p", "pool_slots": 3})
    result = admit([ti(1, "a", "p", 3)], dag, limit_counts(sizes={"p": 2}))
    (reason,) = result.held
    assert "pool 'p' has 2 slots, fewer than the task's pool_slots (3)" in reason
    assert "backfill pools set p 3" in reason
    assert not result.transient


def test_max_active_tasks_counts_the_dag_across_runs() -> None:
    dag = make_dag(max_active_tasks=3, a={}, b={})
    ready = [ti(1, "a"), ti(2, "b"), ti(3, "a")]
    result = admit(ready, dag, limit_counts(dag_active=1))
    assert ids(result.admitted) == [1, 2]
    assert ids(result.held["DAG max_active_tasks (3) reached"]) == [3]
    assert result.transient


def test_max_active_tis_per_dag_limits_one_task_only() -> None:
    dag = make_dag(a={"max_active_tis_per_dag": 2}, b={})
    ready = [ti(1, "a"), ti(2, "a"), ti(3, "b"), ti(4, "b")]
    result = admit(ready, dag, limit_counts(task_active={"a": 1}))
    assert ids(result.admitted) == [1, 3, 4]
    assert ids(result.held["task 'a' max_active_tis_per_dag (2) reached"]) == [2]
    assert result.transient


@pytest.mark.parametrize(
    ("limits", "reason"),
    [
        (limit_counts(sizes={"p": 1}), "does not exist"),  # missing pool is checked first
        (limit_counts(sizes={"q": 1}, used={"q": 1}, dag_active=9), "is full"),
        (limit_counts(sizes={"q": 5}, dag_active=9, task_active={"a": 9}), "max_active_tasks"),
    ],
)
def test_the_first_blocking_reason_is_reported(limits: LimitCounts, reason: str) -> None:
    dag = make_dag(max_active_tasks=9, a={"pool": "q", "max_active_tis_per_dag": 1})
    result = admit([ti(1, "a", "q")], dag, limits)
    (held,) = result.held
    assert reason in held
    assert result.admitted == []


def test_admission_takes_a_snapshot_of_counts_without_changing_them() -> None:
    dag = make_dag(a={})
    limits = limit_counts(used={DEFAULT_POOL: 1}, task_active={"a": 1}, dag_active=1)
    admit([ti(1, "a"), ti(2, "a")], dag, limits)
    assert limits.pool_slots == {DEFAULT_POOL: 1}
    assert limits.task_active == {"a": 1}
