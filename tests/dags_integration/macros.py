"""The DAG of the macros test (tests/integration/test_macros.py).

- `macros_check`: a daily DAG in Europe/Amsterdam (clocks go forward on
  2024-03-31) with `params`; its one task records what its Context says, the
  date variables and the params merged with the run's conf, in the ledger.
"""

from __future__ import annotations

import pendulum
from support.ledger import record

from backfill import DAG, Context

PARAMS = {"table": "events", "limit": 10, "options": {"dry": True}}

macros_check = DAG(
    "macros_check",
    schedule="@daily",
    start_date=pendulum.datetime(2024, 3, 30, tz="Europe/Amsterdam"),
    params=PARAMS,
)


@macros_check.task
def report(ctx: Context) -> None:
    record(
        "macros",
        ctx,
        ds_nodash=ctx.ds_nodash,
        ts=ctx.ts,
        ts_nodash=ctx.ts_nodash,
        prev_ds=ctx.prev_ds,
        prev_ds_nodash=ctx.prev_ds_nodash,
        next_ds=ctx.next_ds,
        next_ds_nodash=ctx.next_ds_nodash,
        data_interval_start=ctx.data_interval_start.isoformat(),
        data_interval_end=ctx.data_interval_end.isoformat(),
        params=ctx.params,
        conf=ctx.conf,
    )
