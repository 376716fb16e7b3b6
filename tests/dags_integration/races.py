"""DAGs of the race tests (tests/integration/test_races.py).

- `race_bash`: Airflow's example_bash_operator shape, every task sleeping a
  tiny random time (0-20 ms): the shape and timing of the 2016 spurious
  deadlock report.
- `dup_delivery`: a small diamond whose messages the test delivers 3 times.
- `two_drivers`: limits two coordinators must both respect: a rolling window
  of 2 active runs and a middle task in the 1-slot pool `it_single`.

Every callable appends to the test's execution ledger (see `_support.py`).
"""

from __future__ import annotations

import _support as support  # beside this file: the DAGs folder is importable
import pendulum

from backfill import DAG, Context

START = pendulum.datetime(2016, 1, 1, tz="UTC")
SINGLE_POOL = "it_single"


def jitter(ctx: Context) -> None:
    support.timed(ctx, 0.0, 0.02)


race_bash = DAG(
    "race_bash",
    schedule="@daily",
    start_date=START,
    max_active_runs=16,
    max_active_tasks=16,
)
_loop = [race_bash.add_task(f"runme_{i}", jitter) for i in range(3)]
_after_loop = race_bash.add_task("run_after_loop", jitter)
_also = race_bash.add_task("also_run_this", jitter)
_last = race_bash.add_task("run_this_last", jitter)
_loop >> _after_loop >> _last
_also >> _last


dup_delivery = DAG("dup_delivery", schedule="@daily", start_date=START)
_top = dup_delivery.add_task("top", jitter)
_sides = [dup_delivery.add_task(f"side_{i}", jitter) for i in range(3)]
_bottom = dup_delivery.add_task("bottom", jitter)
_top >> _sides >> _bottom


def slow(ctx: Context) -> None:
    support.timed(ctx, 0.02, 0.06)


two_drivers = DAG(
    "two_drivers",
    schedule="@daily",
    start_date=START,
    max_active_runs=2,
    max_active_tasks=16,
)
_extract = two_drivers.add_task("extract", slow)
_side = two_drivers.add_task("side", slow)
_load = two_drivers.add_task("load", slow, pool=SINGLE_POOL)
_report = two_drivers.add_task("report", slow)
_extract >> _load >> _report
_side >> _report
