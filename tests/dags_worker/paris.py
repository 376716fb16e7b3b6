"""A DAG in Europe/Paris: its `ds` is the local date, not the UTC one."""

from __future__ import annotations

import pendulum

from backfill import DAG, Context

dag = DAG(
    "worker_paris",
    schedule="@daily",
    start_date=pendulum.datetime(2024, 1, 1, tz="Europe/Paris"),
)


@dag.task
def local_day(ctx: Context) -> None:
    with open(ctx.conf["ledger"], "a") as ledger:
        when = ctx.logical_date.isoformat()
        ledger.write(f"{ctx.task_id} ran {ctx.ds} {ctx.try_number} {when}\n")
