"""A DAG in Europe/Paris: its `ds` is the local date, not the UTC one."""

from __future__ import annotations

import pendulum
from support.ledger import record

from backfill import DAG, Context

dag = DAG(
    "worker_paris",
    schedule="@daily",
    start_date=pendulum.datetime(2024, 1, 1, tz="Europe/Paris"),
)


@dag.task
def local_day(ctx: Context) -> None:
    record("ran", ctx)
