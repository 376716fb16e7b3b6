"""DAGs of tests/parity/test_execution.py: order, conf, retries and failures.

- `parity_order`: Airflow's test_backfill_ordered_concurrent_execute shape,
  leave1, leave2 >> upstream_level_1 >> upstream_level_2 >> upstream_level_3;
  every start line carries `ctx.conf` and `ctx.run_id`;
- `parity_flaky`: `flaky` fails its first try and succeeds its second
  (retries=2, retry_delay 0.5 s), `after` runs once it succeeded;
- `parity_doomed`: `doomed` fails every try (retries=1, retry_delay 0);
  `bystander` beside it succeeds;
- `parity_stop`: one run at a time; `a` fails on the first day of a month,
  `b` runs after it (the stop-on-failure and `--continue-on-failures` tests).

Every callable appends to the test's ledger (see `_parity.py`).
"""

from __future__ import annotations

from datetime import timedelta

import _parity as parity  # beside this file: the DAGs folder is importable
import pendulum

from backfill import DAG, Context

START = pendulum.datetime(2016, 1, 1, tz="UTC")


def level(ctx: Context) -> None:
    parity.timed(ctx, 0.15, conf=ctx.conf, run_id=ctx.run_id)


parity_order = DAG("parity_order", schedule="@daily", start_date=START)
_leave1 = parity_order.add_task("leave1", level)
_leave2 = parity_order.add_task("leave2", level)
_level1 = parity_order.add_task("upstream_level_1", level)
_level2 = parity_order.add_task("upstream_level_2", level)
_level3 = parity_order.add_task("upstream_level_3", level)
# Declared in a scrambled order, as in Airflow's test.
_leave2 >> _level1
_leave1 >> _level1
_level2 >> _level3
_level1 >> _level2


def flaky(ctx: Context) -> None:
    parity.record("start", ctx)
    if ctx.try_number == 1:
        raise RuntimeError(f"flaky fails its try 1 on {ctx.ds}")
    parity.record("end", ctx)


def quick(ctx: Context) -> None:
    parity.timed(ctx, 0.01)


parity_flaky = DAG(
    "parity_flaky",
    schedule="@daily",
    start_date=START,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=0.5)},
)
parity_flaky.add_task("flaky", flaky) >> parity_flaky.add_task("after", quick)


def doomed(ctx: Context) -> None:
    parity.record("start", ctx)
    raise RuntimeError(f"doomed fails every try (this was try {ctx.try_number})")


parity_doomed = DAG(
    "parity_doomed",
    schedule="@daily",
    start_date=START,
    default_args={"retries": 1, "retry_delay": timedelta(0)},
)
parity_doomed.add_task("doomed", doomed)
parity_doomed.add_task("bystander", quick)


def fails_on_the_first(ctx: Context) -> None:
    parity.record("start", ctx)
    if ctx.ds.endswith("-01"):
        raise RuntimeError(f"a fails on the first day of the month ({ctx.ds})")
    parity.record("end", ctx)


parity_stop = DAG("parity_stop", schedule="@daily", start_date=START, max_active_runs=1)
parity_stop.add_task("a", fails_on_the_first) >> parity_stop.add_task("b", quick)
