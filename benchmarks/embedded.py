"""(a) and (b) on the embedded default: SQLite + kombu's `filesystem://` broker.

Invariants:
- the user's command is `backfill run DAG -s .. -e ..` with only BACKFILL_HOME
  and BACKFILL_DAGS_FOLDER set (a fresh home under the bench's), so it uses
  the embedded database and broker and starts its default local workers
  (`backfill run`: 2 `celery -A workers worker -c 1`), as a user's would;
  their start-up is part of the command's wall time, as for a user;
- the raw baseline is no-op tasks on the same `filesystem://` folder, run by
  the same worker shape (2 x `-c 1`, `benchmarks.worker_app`: the product's
  app plus the no-op, on the same transport settings), started by the bench
  and stopped before any `backfill run` starts, so the two never share the
  queue; measured before and after the engine scenarios (their mean);
- the no-ops count in the bench's Redis index (BENCH_REDIS_URL): the
  embedded broker has no Redis of its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis

from backfill.store.db import create_engine_for
from benchmarks import phases, stack
from benchmarks.commands import Commands
from benchmarks.fleet import Shape, workers
from benchmarks.phases import Calendar, Drive, Stage
from benchmarks.shapes import ENGINE_SCENARIOS, Sizes
from workers.app import make_app

LOCAL_WORKERS = Shape(count=2, concurrency=1)  # `backfill run`'s default on the embedded broker
RAW_WARMUP = 50
# Smaller than on PostgreSQL + Redis: kombu's filesystem transport runs a few dozen
# tasks a second, so the full sizes would take minutes for the same ratio.
FULL = Sizes(raw_tasks=500, dates={"a": 10, "b": 100})
QUICK = Sizes(raw_tasks=200, dates={"a": 3, "b": 30})


def measure(home: Path, redis_url: str, client: redis.Redis, sizes: Sizes) -> dict[str, Any]:
    settings = stack.embedded_settings(home / "embedded")
    commands = Commands(stack.user_env(settings, embedded=True), home / "logs")
    engine = create_engine_for(settings.database_url)
    app = make_app(settings)
    stage = Stage(settings, commands, engine, client, redis_url, app, Calendar())
    try:
        raw = [_raw(stage, home / "logs", sizes)]
        drives: dict[str, Drive] = {}
        for key in sizes.dates:
            name = f"embedded-{key}"
            drives[key] = phases.drive(stage, ENGINE_SCENARIOS[key], sizes.dates[key], name=name)
        raw.append(_raw(stage, home / "logs", sizes))
    finally:
        app.close()
        engine.dispose()
    raw_rate = sum(r["per_second"] for r in raw) / len(raw)
    result: dict[str, Any] = {
        "workers": f"{LOCAL_WORKERS.describe()} (filesystem://, SQLite)",
        "raw_celery_runs": raw,
        "raw_celery_per_second": raw_rate,
    }
    for key, run in drives.items():
        figures = run.figures()
        figures["ratio"] = figures["ti_per_second"] / raw_rate
        figures["db_ratio"] = figures["db_ti_per_second"] / raw_rate
        result[key] = figures
    return result


def _raw(stage: Stage, logs: Path, sizes: Sizes) -> dict[str, float]:
    with workers(stage.settings, LOCAL_WORKERS, redis_url=stage.redis_url, logs=logs):
        phases.raw_celery(stage, RAW_WARMUP)
        return phases.raw_celery(stage, sizes.raw_tasks)
