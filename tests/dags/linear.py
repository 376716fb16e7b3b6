"""A small daily DAG in UTC: extract -> transform -> load, with some non-default options."""

from __future__ import annotations

import pendulum

from backfill import DAG, Context

dag = DAG(
    "linear",
    schedule="@daily",
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    max_active_runs=3,
)


@dag.task(retries=2, pool="db")
def extract(ctx: Context) -> None:
    print("extract", ctx.ds)


@dag.task
def transform(ctx: Context) -> None:
    print("transform", ctx.ds)


@dag.task(trigger_rule="all_done")
def load(ctx: Context) -> None:
    print("load", ctx.ds)


extract >> transform >> load
