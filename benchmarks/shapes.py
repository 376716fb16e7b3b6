"""Scenarios (a)-(d) on one worker shape, against raw Celery on the same workers.

Invariants:
- a series starts its own workers (`benchmarks.fleet`), warms every pool
  process up with an engine task, warms the raw path up, then measures: raw
  Celery, the engine scenarios, raw Celery again; the baseline of each ratio
  is the mean of the two raw measurements around them;
- a scenario's TI rate is its TIs over the wall time of the user's command,
  launch to exit (`ti_per_second`); the database's own span, the backfill's
  created_at -> its last TI's end_date, is reported beside it
  (`db_ti_per_second`), never instead of it;
- SQL statements per TI try are counted over (a): the command's own
  (`benchmarks.counted`) plus the workers' (`benchmarks.worker_app`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from benchmarks import phases
from benchmarks.fleet import Shape, workers
from benchmarks.phases import Drive, Stage

RAW_WARMUP = 200  # no-ops run before the first raw measurement
ENGINE_SCENARIOS = {"a": "bench_fanout", "b": "bench_fanin", "c": "bench_layers"}


@dataclass(frozen=True)
class Sizes:
    """How big each scenario is: dates of (a), (b), (c); no-ops per raw measurement."""

    raw_tasks: int
    dates: dict[str, int]


FULL = Sizes(raw_tasks=2000, dates={"a": 20, "b": 200, "c": 40})
QUICK = Sizes(raw_tasks=500, dates={"a": 5, "b": 40, "c": 8})


def measure(stage: Stage, shape: Shape, sizes: Sizes, only: frozenset[str]) -> dict[str, Any]:
    """Every selected scenario of (a)-(d) on `shape`; JSON-ready figures."""
    logs = stage.settings.home / "logs"
    result: dict[str, Any] = {"shape": shape.name, "workers": shape.describe()}
    with workers(stage.settings, shape, redis_url=stage.redis_url, logs=logs):
        result["warmup_backfills"] = phases.warm_up(stage, shape.processes)
        phases.raw_celery(stage, RAW_WARMUP)
        raw = [phases.raw_celery(stage, sizes.raw_tasks)]
        drives: dict[str, Drive] = {}
        for key, dag_id in ENGINE_SCENARIOS.items():
            if key in only:
                days = sizes.dates[key]
                drives[key] = phases.drive(stage, dag_id, days, name=f"{shape.name}-{key}")
        if "d" in only:
            drives["d"] = phases.drive(stage, "bench_chain", 1, name=f"{shape.name}-d")
        raw.append(phases.raw_celery(stage, sizes.raw_tasks))
    raw_rate = sum(r["per_second"] for r in raw) / len(raw)
    result.update(raw_celery_runs=raw, raw_celery_per_second=raw_rate)
    for key, run in drives.items():
        figures = run.figures()
        if key == "d":
            figures.update(phases.chain_hops(run))
        else:
            figures["ratio"] = figures["ti_per_second"] / raw_rate
            figures["db_ratio"] = figures["db_ti_per_second"] / raw_rate
        result[key] = figures
    if "a" in drives:
        result["sql"] = statements(drives["a"])
    return result


def statements(fanout: Drive) -> dict[str, Any]:
    """SQL statements per TI try over (a), the command's and the workers' (module doc)."""
    tries, command, workers = fanout.tries, fanout.ran.counts or {}, fanout.worker_sql
    coordinator = int(command.get("statements", 0))
    pings = _pings(command) + _pings(workers)
    return {
        "tries": tries,
        "coordinator_statements": coordinator,
        "worker_statements": workers["statements"],
        "statements_per_try": (coordinator + workers["statements"]) / tries,
        "coordinator_per_try": coordinator / tries,
        "worker_per_try": workers["statements"] / tries,
        "pre_pings_per_try": pings / tries,
        "worker_messages_handled": workers["tasks"],
    }


def _pings(sql: dict[str, Any]) -> int:
    return int(sql.get("pings", 0))
