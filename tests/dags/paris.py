"""An hourly DAG in Europe/Paris (DST on 2024-03-31) and a minutely one for range caps."""

from __future__ import annotations

import pendulum

from backfill import DAG, Context

paris = DAG(
    "paris_hourly",
    schedule="@hourly",
    start_date=pendulum.datetime(2024, 1, 1, tz="Europe/Paris"),
)

every_minute = DAG(
    "every_minute",
    schedule="* * * * *",
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
)


@paris.task
def tick(ctx: Context) -> None:
    print(ctx.logical_date)


@every_minute.task
def blink(ctx: Context) -> None:
    print(ctx.logical_date)
