"""Results between tasks, a task group and a mapped task, the TaskFlow way (README,
"Writing a DAG").

`extract` returns the day's orders; both tasks of the group `summarise` get them as
their argument (`totals(orders)`). `amounts` lists them, and `taxed` is mapped over
that list (`taxed.partial(rate=...).expand(amount=...)`): one task instance per order,
made when `amounts` has run, each with its own `amount` and `ctx.map_index`. `report`
reads what they returned with `ctx.result`, `taxed`'s as the list of its results.
Each return value is stored with its try (JSON, at most BACKFILL_RESULT_MAX_BYTES) and
shown by `backfill tasks` and the web page.

    backfill run example_taskflow -s 2024-01-01 -e 2024-01-03
"""

from __future__ import annotations

from typing import Any

import pendulum

from backfill import DAG, Context

dag = DAG(
    "example_taskflow",
    schedule="@daily",
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    description="results between tasks (TaskFlow and ctx.result) and a task group",
)


@dag.task
def extract(ctx: Context) -> dict[str, Any]:
    day = int(ctx.ds_nodash[-2:])
    return {"day": ctx.ds, "orders": [10 * day, 20, 5 * day]}


with dag.task_group("summarise") as summarise:

    @dag.task
    def totals(ctx: Context, orders: dict[str, Any]) -> int:
        return sum(orders["orders"])

    @dag.task
    def count(ctx: Context, orders: dict[str, Any]) -> int:
        return len(orders["orders"])


@dag.task
def amounts(ctx: Context, orders: dict[str, Any]) -> list[int]:
    return list(orders["orders"])


@dag.task
def taxed(ctx: Context, amount: int, rate: float) -> float:
    print(f"order {ctx.map_index}: {amount} -> {amount * (1 + rate):.2f}")
    return round(amount * (1 + rate), 2)


@dag.task
def report(ctx: Context) -> str:
    total, n = ctx.result("summarise.totals"), ctx.result("summarise.count")
    with_tax = sum(ctx.result("taxed"))  # a mapped task's result: the list of its TIs'
    line = f"{ctx.ds}: {n} orders, {total} in all, {with_tax:.2f} with tax"
    print(line)
    return line


orders = extract()
totals(orders)
count(orders)
summarise >> report
taxed.partial(rate=0.2).expand(amount=amounts(orders)) >> report
