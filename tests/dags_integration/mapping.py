"""The DAG of the mapping test (tests/integration/test_mapping.py).

- `mapping_flow`: `numbers` returns [1, 2, 3] on 2024-01-01 (on a second try
  [10, 20]) and [] on 2024-01-02. `double` maps over it (`partial(factor=2)
  .expand(x=numbers())`): one TI per element, its first try of x == 2 fails
  and is retried. `total` gets the list of double's results.
- `shout` maps over a literal list of four words, one TI at a time
  (`max_active_tis_per_dag=1`), each recording its start and end.
- `bad` maps over `scalar`'s result, which is not a list: its placeholder
  fails, saying why, and `after_bad` is upstream_failed.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pendulum
from support.ledger import record

from backfill import DAG, Context

mapping_flow = DAG(
    "mapping_flow", schedule="@daily", start_date=pendulum.datetime(2024, 1, 1, tz="UTC")
)


@mapping_flow.task
def numbers(ctx: Context) -> list[int]:
    if ctx.ds != "2024-01-01":
        return []
    return [1, 2, 3] if ctx.try_number == 1 else [10, 20]


@mapping_flow.task(retries=1, retry_delay=timedelta(0))
def double(ctx: Context, x: int, factor: int) -> int:
    record("double", ctx, map_index=ctx.map_index, x=x)
    if x == 2 and ctx.try_number == 1:
        raise RuntimeError("the first try of x=2 fails")
    return x * factor


@mapping_flow.task
def total(ctx: Context, values: list[int]) -> int:
    record("total", ctx, values=values)
    return sum(values)


@mapping_flow.task(max_active_tis_per_dag=1)
def shout(ctx: Context, word: str) -> str:
    record("shout-start", ctx, map_index=ctx.map_index)
    time.sleep(0.1)
    record("shout-end", ctx, map_index=ctx.map_index)
    return word.upper()


@mapping_flow.task
def scalar(ctx: Context) -> int:
    return 5


@mapping_flow.task
def bad(ctx: Context, x: int) -> None:
    record("bad", ctx)


@mapping_flow.task
def after_bad(ctx: Context) -> None:
    record("after_bad", ctx)


total(double.partial(factor=2).expand(x=numbers()))
shout.expand(word=["a", "b", "c", "d"])
bad.expand(x=scalar()) >> after_bad
