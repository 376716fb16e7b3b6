"""DAGs of the HA tests (tests/integration/test_ha.py).

- `ha_wide`: five independent tasks a date, each sleeping 0.2-0.5 s, all in
  the pool `ha_slots` (the test gives it 2 slots): over 8 dates, 40 TIs that
  keep a backfill under way for seconds, so a test can kill or pause its
  driver mid-run, and the peak concurrency shows whether the pool held.
- `ha_gate`: `held` blocks until the test opens its gate, then `after` runs:
  a backfill that cannot end before the test says so.

Every callable appends to the test's execution ledger (see `_support.py`).
"""

from __future__ import annotations

import _support as support  # beside this file: the DAGs folder is importable
import pendulum

from backfill import DAG, Context

START = pendulum.datetime(2016, 1, 1, tz="UTC")
HA_POOL = "ha_slots"


def slow(ctx: Context) -> None:
    support.timed(ctx, 0.2, 0.5)


def quick(ctx: Context) -> None:
    support.timed(ctx, 0.0, 0.01)


def held(ctx: Context) -> None:
    support.gated(ctx)


ha_wide = DAG("ha_wide", schedule="@daily", start_date=START)
for _i in range(5):
    ha_wide.add_task(f"t{_i}", slow, pool=HA_POOL)


ha_gate = DAG("ha_gate", schedule="@daily", start_date=START)
_held = ha_gate.add_task("held", held)
_after = ha_gate.add_task("after", quick)
_held >> _after
