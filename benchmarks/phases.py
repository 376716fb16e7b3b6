"""The bench's measurements, each on the servers and workers `benchmarks.stack` set up.

Invariants:
- every backfill is created and driven by `benchmarks.driver` in a process
  of its own (its statements and peak RSS are the coordinator's alone);
- every wait polls for a condition with a deadline, and a missed deadline
  is an error naming what did not happen, never a silently short figure;
- a backfill that does not end in SUCCESS, or that ran any TI more than
  once, fails the bench: its figures would not mean what they say.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import redis
from celery import Celery

from backfill.config import Settings
from backfill.db import create_engine_for
from backfill.local_workers import settings_env
from backfill.states import TIState
from backfill.store import reads, status
from backfill.store.status import TaskRow
from backfill.task_options import DEFAULT_QUEUE
from benchmarks import keys

DRIVE_TIMEOUT = 240.0  # seconds one backfill may take before the bench gives up
POLL = 0.01  # seconds between looks at a Redis counter


class BenchError(RuntimeError):
    """A measurement could not be made (a backfill failed, a wait timed out)."""


@dataclass(frozen=True)
class Drive:
    """One backfill, created and driven by `benchmarks.driver`."""

    report: dict[str, Any]
    rows: list[TaskRow]

    @property
    def tries(self) -> int:
        return sum(r.try_number for r in self.rows)


def drive(settings: Settings, dag_id: str, start: datetime, end: datetime) -> Drive:
    """Create a backfill of `dag_id` over [start, end] and drive it to SUCCESS."""
    logs = settings.home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"driver-{dag_id}-{start:%Y%m%d}.log"
    command = [sys.executable, "-m", "benchmarks.driver", dag_id]
    command += [start.isoformat(), end.isoformat()]
    env = {**os.environ, **settings_env(settings)}
    with log.open("wb") as err:
        done = subprocess.run(
            command, env=env, stdout=subprocess.PIPE, stderr=err, timeout=DRIVE_TIMEOUT, check=False
        )
    if done.returncode != 0:
        raise BenchError(f"the coordinator of {dag_id} exited {done.returncode}; see {log}")
    report: dict[str, Any] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    rows = _rows(settings, report["backfill_id"])
    if report["state"] != "success":
        raise BenchError(f"backfill {report['backfill_id']} of {dag_id} ended {report['state']}")
    repeated = [r for r in rows if r.state is not TIState.SUCCESS or r.try_number != 1]
    if repeated:
        raise BenchError(f"{len(repeated)} TIs of {dag_id} did not succeed on their first try")
    return Drive(report, rows)


def _rows(settings: Settings, backfill_id: int) -> list[TaskRow]:
    engine = create_engine_for(settings.database_url)
    try:
        with reads.reading(engine) as conn:
            rows = status.task_rows(conn, backfill_id)
    finally:
        engine.dispose()
    if rows is None:
        raise BenchError(f"backfill {backfill_id} is not in the database")
    return rows


def wait_for(what: str, condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(POLL)


def counter(client: redis.Redis, key: str) -> int:
    return int(client.get(key) or 0)


def warm_up(settings: Settings, client: redis.Redis, start: datetime, workers: int) -> int:
    """Run small backfills until every worker process has run an engine task; how many."""
    for attempt in range(5):
        date = start + timedelta(days=attempt)
        drive(settings, "bench_warmup", date, date)
        if client.scard(keys.WORKER_PIDS) >= workers:
            return attempt + 1
    raise BenchError(f"after 5 warm-up backfills, not all {workers} workers had run a task")


def raw_celery(app: Celery, client: redis.Redis, count: int) -> dict[str, float]:
    """Publish `count` no-ops to the default queue; time until the workers ran them all."""
    client.delete(keys.NOOP_DONE)
    began = time.perf_counter()
    with app.producer_or_acquire() as producer:
        for _ in range(count):
            app.send_task(keys.NOOP_TASK, queue=DEFAULT_QUEUE, producer=producer)
    published = time.perf_counter()
    wait_for(f"{count} no-op tasks", lambda: counter(client, keys.NOOP_DONE) >= count, 120.0)
    seconds = time.perf_counter() - began
    return {
        "tasks": count,
        "seconds": seconds,
        "publish_seconds": published - began,
        "per_second": count / seconds,
    }


def chain_hops(run: Drive) -> dict[str, Any]:
    """Upstream end_date -> downstream start_date along the chain, in ms (DB rows)."""
    by_task = {r.task_id: r for r in run.rows}
    order = sorted(by_task)  # hop_00 .. hop_49: the chain's order
    hops = []
    for up, down in itertools.pairwise(order):
        end, start = by_task[up].end_date, by_task[down].start_date
        if end is None or start is None:
            raise BenchError(f"chain TI {up} or {down} has no end/start date")
        hops.append((start - end).total_seconds() * 1000)
    return {"hops": len(hops), **_stats(hops)}


def _stats(values: Sequence[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "mean_ms": statistics.fmean(ordered),
        "p50_ms": statistics.median(ordered),
        "p95_ms": ordered[math.ceil(0.95 * len(ordered)) - 1],  # nearest rank
        "max_ms": ordered[-1],
        "min_ms": ordered[0],
    }


def worker_sql(client: redis.Redis) -> dict[str, int]:
    return {
        "statements": counter(client, keys.WORKER_STATEMENTS),
        "checkouts": counter(client, keys.WORKER_CHECKOUTS),
        "connects": counter(client, keys.WORKER_CONNECTS),
        "tasks": counter(client, keys.TI_TASKS_DONE),
    }


def fanout(
    settings: Settings, client: redis.Redis, start: datetime, end: datetime
) -> tuple[Drive, dict[str, int]]:
    """The fan-out backfill, and the statements its workers sent (counted in the workers)."""
    before = worker_sql(client)
    run = drive(settings, "bench_fanout", start, end)
    # The last worker flushes its counts just after its finish, maybe after the
    # coordinator saw SUCCESS: wait for one flush per message it handled.
    wait_for(
        "the workers' statement counts",
        lambda: counter(client, keys.TI_TASKS_DONE) - before["tasks"] >= run.report["dispatched"],
        30.0,
    )
    after = worker_sql(client)
    return run, {k: after[k] - before[k] for k in after}
