"""`make bench`: the engine measured on PostgreSQL + Redis with 2 real Celery workers.

    python -m benchmarks.bench        (from the project root)

In one run, on one fresh database, one Redis DB index and the same two
`celery worker -c 1` processes (`benchmarks.stack`):
(a) a no-op fan-out backfill of 2,000 TIs, TI/s from create to SUCCESS,
    against the raw throughput of a plain Celery no-op task published to the
    same queue (measured before and after it; their mean), and the ratio;
(b) a 50-task linear chain, one run: upstream end_date -> downstream
    start_date per hop, from the database rows;
(c) SQL statements per TI try over (a), counted where they are sent: in the
    coordinator process and in the workers (`benchmarks.sqlcount`);
(d) the coordinator process's peak RSS.
Prints a table and writes the figures to `.backfill/bench.json`; the workers'
and coordinators' logs of the last run are in `.backfill/bench/logs/`.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import celery
import redis

from backfill.config import Settings
from benchmarks import phases, report, stack
from benchmarks.dags.bench_dags import FANOUT_DATES, START
from workers.app import make_app

ROOT = Path(".backfill")
RAW_TASKS = 2000  # no-op tasks per raw Celery measurement
RAW_WARMUP = 200


def measure(settings: Settings, client: redis.Redis) -> dict[str, Any]:
    app = make_app(settings)
    try:
        with stack.workers(settings):
            phases.warm_up(settings, client, START, stack.WORKERS)
            phases.raw_celery(app, client, RAW_WARMUP)
            chain = phases.drive(settings, "bench_chain", START, START)
            raw = [phases.raw_celery(app, client, RAW_TASKS)]
            end = START + timedelta(days=FANOUT_DATES - 1)
            fanout, worker_sql = phases.fanout(settings, client, START, end)
            raw.append(phases.raw_celery(app, client, RAW_TASKS))
    finally:
        app.close()
    return report.figures(
        fanout=fanout, worker_sql=worker_sql, raw=raw, chain=chain, hops=phases.chain_hops(chain)
    )


def environment(client: redis.Redis) -> str:
    server = client.info("server").get("redis_version", "?")
    return (
        f"PostgreSQL + Redis {server}, {stack.WORKERS} workers (celery {celery.__version__} "
        f"-c 1), Python {platform.python_version()}, {os.cpu_count()} CPUs"
    )


def main() -> int:
    home = ROOT / "bench"
    shutil.rmtree(home / "logs", ignore_errors=True)  # the last run's worker and driver logs
    try:
        with stack.pg_database() as db_url, stack.redis_index() as (broker_url, client):
            settings = stack.bench_settings(db_url, broker_url, home)
            about = environment(client)
            figures = measure(settings, client)
    except (stack.BenchSetupError, phases.BenchError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    print(report.table(figures, about))
    out = ROOT / "bench.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"environment": about, **figures}, indent=2) + "\n")
    print(f"figures written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
