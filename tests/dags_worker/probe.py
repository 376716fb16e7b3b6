"""Tasks that end every way a try can end, for the worker tests.

Each task appends its events (`ran`, `start`, `stopped:...`, `after`) to the
test's execution ledger (`support.ledger`): the tests count executions from it.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pendulum
from support.ledger import record

from backfill import DAG, Context, Reschedule, Skip

dag = DAG(
    "worker_probe",
    schedule="@daily",
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    default_args={"retry_delay": timedelta(seconds=30)},
)


def note(ctx: Context, event: str) -> None:
    record(event, ctx)


def wait_stoppable(ctx: Context, seconds: float) -> None:
    """Sleep `seconds`; write `after` only if nobody stopped us first."""
    note(ctx, "start")
    try:
        time.sleep(seconds)
    except BaseException as exc:
        note(ctx, f"stopped:{type(exc).__name__}")
        raise
    note(ctx, "after")


@dag.task
def ok(ctx: Context) -> None:
    note(ctx, "ran")


@dag.task(retries=1)
def boom(ctx: Context) -> None:
    note(ctx, "ran")
    raise ValueError(f"boom on {ctx.ds}\nsecond line")


@dag.task
def boom_final(ctx: Context) -> None:
    note(ctx, "ran")
    raise ValueError("boom for good")


@dag.task
def skipper(ctx: Context) -> None:
    note(ctx, "ran")
    raise Skip()


@dag.task
def sensor(ctx: Context) -> None:
    note(ctx, "ran")
    raise Reschedule(timedelta(seconds=60))


@dag.task(execution_timeout=timedelta(seconds=1))
def slow(ctx: Context) -> None:
    wait_stoppable(ctx, 60)


@dag.task
def hang(ctx: Context) -> None:
    wait_stoppable(ctx, 60)
