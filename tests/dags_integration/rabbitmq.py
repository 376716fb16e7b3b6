"""DAGs of the RabbitMQ tests (tests/integration/test_rabbitmq.py).

- `rabbit_long`: `long` blocks on a gate the test controls, then succeeds: a
  try as long as the test wants (longer than RabbitMQ's consumer_timeout). It
  has a retry, so a try lost to the timeout would show as a try 2. `after`
  runs after it.

Every callable appends to the test's execution ledger (see `_support.py`).
"""

from __future__ import annotations

from datetime import timedelta

import _support as support  # beside this file: the DAGs folder is importable
import pendulum

from backfill import DAG, Context

START = pendulum.datetime(2016, 1, 1, tz="UTC")


def gated(ctx: Context) -> None:
    support.gated(ctx)


def quick(ctx: Context) -> None:
    support.timed(ctx, 0.0, 0.01)


rabbit_long = DAG("rabbit_long", schedule="@daily", start_date=START)
_long = rabbit_long.add_task("long", gated, retries=1, retry_delay=timedelta(0))
_after = rabbit_long.add_task("after", quick)
_long >> _after
