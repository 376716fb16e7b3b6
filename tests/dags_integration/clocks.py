"""DAGs of the clock tests (tests/integration/test_clocks.py).

- `clock_gate`: `hold` blocks on a gate the test controls (so a test can keep
  a try running past the heartbeat timeout, or kill its worker), then ends;
  `after` runs after it, and `beside` over each date beside it.

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


def hold(ctx: Context) -> None:
    support.gated(ctx)


clock_gate = DAG("clock_gate", schedule="@daily", start_date=START)
_hold = clock_gate.add_task("hold", hold, retries=1, retry_delay=timedelta(0))
_after = clock_gate.add_task("after", quick)
clock_gate.add_task("beside", quick)
_hold >> _after
