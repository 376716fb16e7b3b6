"""DAGs of the fault tests (tests/integration/test_faults.py).

- `fault_gate`: `hold`'s first try blocks on a gate the test controls (so a
  test can kill or pause the worker running it) and then fails late; its
  retry succeeds at once. `after_hold` runs after it; `bystander` runs beside.
- `fault_chain`: a slow three-task chain, one run at a time, so a test can
  kill the coordinator in the middle of a backfill.
- `fault_fanout`: two independent tasks joined by a third.

Every callable appends to the test's execution ledger (see `_support.py`).
"""

from __future__ import annotations

from datetime import timedelta

import _support as support  # beside this file: the DAGs folder is importable
import pendulum

from backfill import DAG, Context

START = pendulum.datetime(2016, 1, 1, tz="UTC")


def quick(ctx: Context) -> None:
    support.timed(ctx, 0.0, 0.01)


def held(ctx: Context) -> None:
    support.held_first_try(ctx)


def slow(ctx: Context) -> None:
    support.timed(ctx, 0.15, 0.2)


fault_gate = DAG("fault_gate", schedule="@daily", start_date=START)
_hold = fault_gate.add_task("hold", held, retries=1, retry_delay=timedelta(0))
_after_hold = fault_gate.add_task("after_hold", quick)
fault_gate.add_task("bystander", quick)
_hold >> _after_hold


fault_chain = DAG("fault_chain", schedule="@daily", start_date=START, max_active_runs=1)
_a = fault_chain.add_task("a", slow)
_b = fault_chain.add_task("b", slow)
_c = fault_chain.add_task("c", slow)
_a >> _b >> _c


fault_fanout = DAG("fault_fanout", schedule="@daily", start_date=START)
_left = fault_fanout.add_task("left", quick)
_right = fault_fanout.add_task("right", quick)
_join = fault_fanout.add_task("join", quick)
[_left, _right] >> _join
