"""The DAGs of `make bench`; every task is a no-op, so what is measured is the engine.

- `bench_warmup`: independent tasks, one date: run first so that each worker
  process has loaded the DAGs and opened its engine before anything is timed.
- `bench_fanout`: FANOUT_TASKS independent tasks per date over FANOUT_DATES
  dates (2,000 TIs), with every DAG limit above the TI count: the limits are
  not what is measured.
- `bench_chain`: CHAIN_LENGTH tasks in one line, for the hop latency.
"""

from __future__ import annotations

import pendulum

from backfill import DAG, Context

START = pendulum.datetime(2024, 1, 1, tz="UTC")
WARMUP_TASKS = 20
FANOUT_DATES = 20
FANOUT_TASKS = 100
CHAIN_LENGTH = 50


def noop(ctx: Context) -> None:
    return None


bench_warmup = DAG("bench_warmup", schedule="@daily", start_date=START)
for i in range(WARMUP_TASKS):
    bench_warmup.add_task(f"warm_{i:02d}", noop)

bench_fanout = DAG(
    "bench_fanout",
    schedule="@daily",
    start_date=START,
    max_active_runs=FANOUT_DATES,
    max_active_tasks=FANOUT_DATES * FANOUT_TASKS,
)
for i in range(FANOUT_TASKS):
    bench_fanout.add_task(f"noop_{i:03d}", noop)

bench_chain = DAG("bench_chain", schedule="@daily", start_date=START)
_previous = None
for i in range(CHAIN_LENGTH):
    _hop = bench_chain.add_task(f"hop_{i:02d}", noop)
    if _previous is not None:
        _previous >> _hop
    _previous = _hop
