"""The DAGs of `make bench`; every task is a no-op, so what is measured is the engine.

Every limit is above the TI count of the scenario that uses the DAG, except
`max_active_runs` where the shape is about the rolling window ((b), (c), (e)).

- `bench_warmup`: independent tasks, one date: run first so that each worker
  process has loaded the DAGs and opened its engine before anything is timed.
- (a) `bench_fanout`: FANOUT_TASKS independent tasks a date (wide).
- (b) `bench_fanin`: 1 -> FANIN_WIDTH -> 1 a date, max_active_runs WINDOW:
  over many more dates than the window, so the rolling window matters.
- (c) `bench_layers`: LAYERS layers of LAYER_WIDTH tasks, every task of a
  layer feeding every task of the next, max_active_runs WINDOW.
- (d) `bench_chain`: CHAIN_LENGTH tasks in one line, for the hop latency.
- (e) `bench_hourly_layers`: (c)'s shape on an hourly schedule from SCALE_START,
  for the 439,200-TI scale scenario; `bench_hourly_idle` is the same shape
  under another id, for the pass-time backfills (a DAG's max_active_runs is
  counted across its backfills, so they must not share the DAG of (e)).
"""

from __future__ import annotations

import pendulum

from backfill import DAG, Context
from backfill.model.task import Task

START = pendulum.datetime(2024, 1, 1, tz="UTC")
SCALE_START = pendulum.datetime(2016, 1, 1, tz="UTC")
UNLIMITED = 1_000_000  # a limit far above any scenario's TI or run count
WINDOW = 16  # max_active_runs of the shapes whose rolling window matters
WARMUP_TASKS = 20
FANOUT_TASKS = 100
FANIN_WIDTH = 8
LAYERS = 5
LAYER_WIDTH = 10
CHAIN_LENGTH = 50


def noop(ctx: Context) -> None:
    return None


def _dag(dag_id: str, *, schedule: str = "@daily", max_active_runs: int = WINDOW) -> DAG:
    start = SCALE_START if schedule == "@hourly" else START
    return DAG(
        dag_id,
        schedule=schedule,
        start_date=start,
        max_active_runs=max_active_runs,
        max_active_tasks=UNLIMITED,
    )


def _layered(dag: DAG, layers: int, width: int) -> DAG:
    previous: list[Task] = []
    for layer in range(layers):
        current = [dag.add_task(f"l{layer}_t{i:02d}", noop) for i in range(width)]
        for upstream in previous:
            upstream >> current
        previous = current
    return dag


bench_warmup = DAG("bench_warmup", schedule="@daily", start_date=START)
for _i in range(WARMUP_TASKS):
    bench_warmup.add_task(f"warm_{_i:02d}", noop)

bench_fanout = _dag("bench_fanout", max_active_runs=UNLIMITED)  # every date at once
for _i in range(FANOUT_TASKS):
    bench_fanout.add_task(f"noop_{_i:03d}", noop)

bench_fanin = _dag("bench_fanin")
_spread = [bench_fanin.add_task(f"mid_{_i}", noop) for _i in range(FANIN_WIDTH)]
bench_fanin.add_task("first", noop) >> _spread
_spread >> bench_fanin.add_task("last", noop)

bench_layers = _layered(_dag("bench_layers"), LAYERS, LAYER_WIDTH)
bench_hourly_layers = _layered(_dag("bench_hourly_layers", schedule="@hourly"), LAYERS, LAYER_WIDTH)
bench_hourly_idle = _layered(_dag("bench_hourly_idle", schedule="@hourly"), LAYERS, LAYER_WIDTH)

bench_chain = _dag("bench_chain")
_previous = None
for _i in range(CHAIN_LENGTH):
    _hop = bench_chain.add_task(f"hop_{_i:02d}", noop)
    if _previous is not None:
        _previous >> _hop
    _previous = _hop
