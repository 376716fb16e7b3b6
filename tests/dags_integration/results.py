"""The DAG of the results test (tests/integration/test_results.py).

- `results_flow`: TaskFlow `transform(extract())` passes extract's return value
  to transform's parameter; `load` reads both results with `ctx.result` and
  records them in the ledger. `too_big` returns more JSON than the test's
  BACKFILL_RESULT_MAX_BYTES, `not_json` a set: both tries fail. `reads_failed`
  (all_done, after `not_json`) asks for not_json's result: its try fails.
"""

from __future__ import annotations

from typing import Any

import pendulum
from support.ledger import record

from backfill import DAG, Context

results_flow = DAG(
    "results_flow", schedule="@daily", start_date=pendulum.datetime(2024, 1, 1, tz="UTC")
)


@results_flow.task
def extract(ctx: Context) -> dict[str, Any]:
    return {"ds": ctx.ds, "rows": [1, 2, 3, int(ctx.ds_nodash[-2:])]}


@results_flow.task
def transform(ctx: Context, data: dict[str, Any]) -> dict[str, Any]:
    record("transform", ctx, got=data)
    return {"ds": data["ds"], "total": sum(data["rows"])}


@results_flow.task
def load(ctx: Context) -> None:
    record("load", ctx, transform=ctx.result("transform"), extract=ctx.result("extract"))


@results_flow.task
def too_big(ctx: Context) -> str:
    return "x" * 5000


@results_flow.task
def not_json(ctx: Context) -> set[int]:
    return {1, 2}


@results_flow.task(trigger_rule="all_done")
def reads_failed(ctx: Context) -> None:
    ctx.result("not_json")


transform(extract()) >> load
not_json >> reads_failed
