"""The DAGs of the callbacks test (tests/integration/test_callbacks.py).

Every callback records its event in the ledger (`cb:<event>`, with the
context's `exception` and `reason`); `broken` raises, to show that a callback
that raises changes no outcome and stops no other callback.

- `callbacks_ok`: first >> second, both succeed; second's on_success_callback
  is [broken, recorder, a reader of first's result]. Run callbacks on success
  and failure.
- `callbacks_fail`: flaky (retries=1, no delay, always raises) >> downstream
  (upstream_failed: no callback). The run's on_failure_callback is [broken,
  recorder].
- `callbacks_fenced`: one task blocked on its gate until the test aborts it.
- `callbacks_ha`: one task blocked on its gate until the test opens it, for
  two coordinator daemons, the driver killed between two runs' ends.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from _support import gated, record

from backfill import DAG, CallbackContext, Context

START = pendulum.datetime(2024, 1, 1, tz="UTC")


def called(event: str) -> Any:
    def callback(ctx: CallbackContext) -> None:
        record(f"cb:{event}", ctx, exception=ctx.exception, reason=ctx.reason)

    return callback


def broken(ctx: CallbackContext) -> None:
    raise RuntimeError("the pager is down")


TASK_CALLBACKS = {
    "on_success_callback": called("task_success"),
    "on_failure_callback": called("task_failure"),
    "on_retry_callback": called("task_retry"),
}


def started(ctx: Context) -> None:
    record("start", ctx)


callbacks_ok = DAG(
    "callbacks_ok",
    schedule="@daily",
    start_date=START,
    default_args=TASK_CALLBACKS,
    on_success_callback=called("run_success"),
    on_failure_callback=called("run_failure"),
)


def first_result(ctx: Context) -> str:
    record("start", ctx)
    return f"first of {ctx.ds}"


def read_first(ctx: CallbackContext) -> None:  # a callback reads results as its task does
    record("cb:read", ctx, first=ctx.result("first"))


first = callbacks_ok.add_task("first", first_result)
second = callbacks_ok.add_task(
    "second", started, on_success_callback=[broken, called("task_success"), read_first]
)
first >> second


callbacks_fail = DAG(
    "callbacks_fail",
    schedule="@daily",
    start_date=START,
    default_args=TASK_CALLBACKS,
    on_success_callback=called("run_success"),
    on_failure_callback=[broken, called("run_failure")],
)


@callbacks_fail.task(retries=1, retry_delay=timedelta(0))
def flaky(ctx: Context) -> None:
    record("start", ctx)
    raise ValueError(f"try {ctx.try_number} fails")


flaky >> callbacks_fail.add_task("downstream", started)


callbacks_fenced = DAG(
    "callbacks_fenced",
    schedule="@daily",
    start_date=START,
    default_args=TASK_CALLBACKS,
    on_success_callback=called("run_success"),
    on_failure_callback=called("run_failure"),
)
callbacks_fenced.add_task("held", gated)


callbacks_ha = DAG(
    "callbacks_ha",
    schedule="@daily",
    start_date=START,
    default_args=TASK_CALLBACKS,
    on_success_callback=called("run_success"),
    on_failure_callback=called("run_failure"),
)
callbacks_ha.add_task("held", gated)
