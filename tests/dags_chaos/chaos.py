"""DAGs of the fault matrix (`python -m chaos`, `make chaos`; chaos/rows_*.py).

Each is ten tasks a date, `t0 >> t1..t8 >> t9`, over as many daily dates as a
row asks for (100 dates: 1,000 TIs), its callables appending to the
execution ledger (`support.ledger`: one `start` line per callable start, no
uniqueness anywhere):

- `chaos_retry`: 0-20 ms tasks with 3 immediate retries: a try killed with its
  worker is reaped, then retried;
- `chaos_strict`: the same with no retries at all: any try whose outcome is
  lost, or that is reaped while its worker lives, fails its TI (a "lost" TI);
- `chaos_steady`: like `chaos_strict`, each try 0.1-0.3 s: tries long enough
  to be in flight whenever a fault strikes, and to see housekeeping (reaping)
  while they run;
- `chaos_steady_retry`: `chaos_steady` with 3 retries (a killed worker's tries
  are retried);
- `chaos_long`: `chaos_retry` whose `t9` runs 4 s, longer than the short Redis
  visibility timeout of its row;
- `chaos_poison`: `chaos_retry` plus `poison`, whose try 1 kills its own pool
  process (`os._exit`) on every 25th date; its retry succeeds.
"""

from __future__ import annotations

import os
import random
import time
from datetime import timedelta
from typing import Any

import pendulum
from support.ledger import record

from backfill import DAG, Context

START = pendulum.datetime(2016, 1, 1, tz="UTC")
POISON_EVERY = 25  # dates: try 1 of `poison` kills its process on dates 0, 25, 50, 75


def _body(low: float, high: float) -> Any:
    def body(ctx: Context) -> None:
        record("start", ctx)
        time.sleep(random.uniform(low, high))
        record("end", ctx)

    return body


def poison(ctx: Context) -> None:
    record("start", ctx)
    if ctx.try_number == 1 and (ctx.logical_date - START).days % POISON_EVERY == 0:
        os._exit(1)  # the pool process dies mid-try: no outcome, no ack
    record("end", ctx)


def _dag(dag_id: str, *, retries: int, low: float, high: float, last: float | None = None) -> DAG:
    dag = DAG(
        dag_id,
        schedule="@daily",
        start_date=START,
        max_active_runs=32,
        max_active_tasks=64,
        default_args={"retries": retries, "retry_delay": timedelta(0)},
    )
    quick = _body(low, high)
    first = dag.add_task("t0", quick)
    middle = [dag.add_task(f"t{i}", quick) for i in range(1, 9)]
    end = dag.add_task("t9", quick if last is None else _body(last, last))
    first >> middle >> end
    return dag


chaos_retry = _dag("chaos_retry", retries=3, low=0.0, high=0.02)
chaos_strict = _dag("chaos_strict", retries=0, low=0.0, high=0.02)
chaos_steady = _dag("chaos_steady", retries=0, low=0.1, high=0.3)
chaos_steady_retry = _dag("chaos_steady_retry", retries=3, low=0.1, high=0.3)
chaos_long = _dag("chaos_long", retries=3, low=0.0, high=0.02, last=4.0)
chaos_poison = _dag("chaos_poison", retries=3, low=0.0, high=0.02)
chaos_poison.add_task("poison", poison)
