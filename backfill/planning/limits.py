"""Admission of ready TIs under pools and concurrency limits. Pure.

A saturated limit holds back only the TIs it limits, never the whole pass
(unlike Airflow, #26078): every ready TI is considered, in dispatch order.
This is the planner's view, used to choose and to explain; the store checks
the same limits again inside the queueing transaction, which is what makes
them hold globally across coordinators.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from backfill.model.dag import DAG
from backfill.planning.snapshot import LimitCounts, TIRow

UNLIMITED = -1


@dataclass(frozen=True)
class Admission:
    admitted: list[TIRow]
    held: Mapping[str, tuple[TIRow, ...]]  # reason -> TIs held back
    transient: bool  # some TI waits only for occupied capacity to free up


def admit(ready: Iterable[TIRow], dag: DAG, limits: LimitCounts) -> Admission:
    pool_used = Counter(limits.pool_slots)
    task_active = Counter(limits.task_active)
    dag_active = limits.dag_active
    admitted: list[TIRow] = []
    held: dict[str, list[TIRow]] = defaultdict(list)
    transient = False
    for ti in ready:
        reason, permanent = _blocker(
            ti,
            dag,
            pool_sizes=limits.pool_sizes,
            pool_used=pool_used,
            task_active=task_active,
            dag_active=dag_active,
        )
        if reason is not None:
            held[reason].append(ti)
            transient = transient or not permanent
            continue
        admitted.append(ti)
        pool_used[ti.pool] += ti.pool_slots
        task_active[ti.task_id] += 1
        dag_active += 1
    return Admission(admitted, {k: tuple(v) for k, v in held.items()}, transient)


def _blocker(
    ti: TIRow,
    dag: DAG,
    *,
    pool_sizes: Mapping[str, int],
    pool_used: Mapping[str, int],
    task_active: Mapping[str, int],
    dag_active: int,
) -> tuple[str | None, bool]:
    """(reason the TI cannot be queued now, whether that can never change) or (None, False)."""
    size = pool_sizes.get(ti.pool)
    if size is None:
        return (
            f"pool {ti.pool!r} does not exist; create it: backfill pools set {ti.pool} SLOTS",
            True,
        )
    if size != UNLIMITED and ti.pool_slots > size:
        return (
            f"pool {ti.pool!r} has {size} slots, fewer than the task's pool_slots "
            f"({ti.pool_slots}); enlarge it: backfill pools set {ti.pool} {ti.pool_slots}",
            True,
        )
    if size != UNLIMITED and pool_used[ti.pool] + ti.pool_slots > size:
        return f"pool {ti.pool!r} is full ({size} slots)", False
    if dag_active >= dag.max_active_tasks:
        return f"DAG max_active_tasks ({dag.max_active_tasks}) reached", False
    task_limit = dag.tasks[ti.task_id].options.max_active_tis_per_dag
    if task_limit is not None and task_active[ti.task_id] >= task_limit:
        return f"task {ti.task_id!r} max_active_tis_per_dag ({task_limit}) reached", False
    return None, False
