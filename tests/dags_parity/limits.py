"""DAGs of tests/parity/test_limits.py: pools, concurrency limits and max_active_runs.

Every callable records start and end in the ledger around a sleep long
enough for the limited TIs to overlap:
- `parity_pool`: `op` in the 2-slot pool `parity_two`;
- `parity_default_pool`: `op` in `default_pool` (the test resizes it);
- `parity_dag_limit`: max_active_tasks=2;
- `parity_task_limit`: `op` has max_active_tis_per_dag=2, `free` beside it has no limit;
- `parity_unknown_pool`: `op` in a pool that never exists;
- `parity_slots`: `heavy` (pool_slots=2) and `light` (1) share the 3-slot pool
  `parity_three`; `parity_too_big`: `op` needs 3 slots of the 2-slot `parity_two`;
- `parity_share_a` / `parity_share_b`: two DAGs sharing the 2-slot pool
  `parity_shared`; their tries hold until the test turns `parity_shared.go` on;
- `parity_runs`: max_active_runs=2; `second` is long on 2016-01-02 only, so
  a rolling window starts later runs beside it.
"""

from __future__ import annotations

import time
from typing import Any

import _parity as parity  # beside this file: the DAGs folder is importable
import pendulum

from backfill import DAG, Context

START = pendulum.datetime(2016, 1, 1, tz="UTC")


def busy(ctx: Context) -> None:
    parity.timed(ctx, 0.4)


def _single(dag_id: str, **options: Any) -> DAG:
    dag = DAG(dag_id, schedule="@daily", start_date=START, **options.pop("dag", {}))
    dag.add_task("op", busy, **options)
    return dag


parity_pool = _single("parity_pool", pool="parity_two")
parity_default_pool = _single("parity_default_pool")
parity_dag_limit = _single("parity_dag_limit", dag={"max_active_tasks": 2})
parity_unknown_pool = _single("parity_unknown_pool", pool="parity_no_such_pool")

parity_task_limit = _single("parity_task_limit", max_active_tis_per_dag=2)
parity_task_limit.add_task("free", busy)

parity_slots = DAG("parity_slots", schedule="@daily", start_date=START)
parity_slots.add_task("heavy", busy, pool="parity_three", pool_slots=2)
parity_slots.add_task("light", busy, pool="parity_three")
parity_too_big = _single("parity_too_big", pool="parity_two", pool_slots=3)


def shared(ctx: Context) -> None:
    parity.record("start", ctx)
    parity.wait_for_switch("parity_shared.go")  # until both coordinators drive
    time.sleep(0.3)
    parity.record("end", ctx)


parity_share_a = DAG("parity_share_a", schedule="@daily", start_date=START)
parity_share_a.add_task("op", shared, pool="parity_shared")
parity_share_b = DAG("parity_share_b", schedule="@daily", start_date=START)
parity_share_b.add_task("op", shared, pool="parity_shared")


def short(ctx: Context) -> None:
    parity.timed(ctx, 0.1)


def long_on_the_2nd(ctx: Context) -> None:
    parity.timed(ctx, 1.5 if ctx.ds == "2016-01-02" else 0.1)


parity_runs = DAG("parity_runs", schedule="@daily", start_date=START, max_active_runs=2)
parity_runs.add_task("first", short) >> parity_runs.add_task("second", long_on_the_2nd)
