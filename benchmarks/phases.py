"""The bench's measurements of one stage: a database, a broker, and the workers on them.

Invariants:
- every backfill is created and driven by the user's command, `backfill run
  DAG -s START -e END --output json`, run through `benchmarks.commands` (no
  `--local-workers`: on a server broker the workers are the bench's own;
  on the embedded default, `run`'s default local workers);
- a backfill that does not end in SUCCESS, or any of whose TIs did not
  succeed on its first try, fails the bench: its figures would not mean what
  they say;
- every wait polls for a condition with a deadline, and a missed deadline is
  an error naming what did not happen, never a silently short figure;
- the raw Celery baseline is `count` no-op tasks published to the default
  queue of the same broker, run by the same worker processes.
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import redis
from celery import Celery
from sqlalchemy.engine import Engine

from backfill.config import Settings
from backfill.model.task_options import DEFAULT_QUEUE
from benchmarks import keys, queries
from benchmarks.commands import Commands, Ran, Stdout
from benchmarks.dags.bench_dags import START

DRIVE_TIMEOUT = 600.0  # seconds one `backfill run` may take before the bench gives up
POLL = 0.01  # seconds between looks at a Redis counter


class BenchError(RuntimeError):
    """A measurement could not be made (a backfill failed, a wait timed out)."""


class Calendar:
    """Hands out date ranges never used before on a stage, per daily DAG: a range used
    twice would be skipped by `backfill run` (its runs exist), not run again."""

    def __init__(self) -> None:
        self._next: dict[str, datetime] = {}

    def take(self, dag_id: str, days: int) -> tuple[datetime, datetime]:
        start = self._next.get(dag_id, START)
        self._next[dag_id] = start + timedelta(days=days)
        return start, start + timedelta(days=days - 1)


@dataclass(frozen=True)
class Stage:
    """Where one series of measurements runs: settings, commands, reads, counters."""

    settings: Settings
    commands: Commands
    engine: Engine  # the bench's own reads of the metadata database
    client: redis.Redis  # the counters of `benchmarks.worker_app`, in the bench's Redis index
    redis_url: str  # that index's URL, for the workers
    app: Celery  # publishes the raw baseline's no-ops
    calendar: Calendar


@dataclass(frozen=True)
class Drive:
    """One backfill, created and driven by `backfill run`, read back from the database."""

    dag_id: str
    ran: Ran
    backfill_id: int
    created_at: datetime
    rows: list[queries.TIRow]
    worker_sql: dict[str, int]  # counted in the workers while it ran ({} if not counted)

    @property
    def tries(self) -> int:
        return sum(r.try_number for r in self.rows)

    @property
    def db_seconds(self) -> float:
        """The backfill's created_at -> its last TI's end_date."""
        last = max(r.end_date for r in self.rows if r.end_date is not None)
        return (last - self.created_at).total_seconds()

    def figures(self) -> dict[str, Any]:
        tis = len(self.rows)
        return {
            "dag_id": self.dag_id,
            "backfill_id": self.backfill_id,
            "task_instances": tis,
            "wall_seconds": self.ran.seconds,
            "ti_per_second": tis / self.ran.seconds,
            "db_seconds": self.db_seconds,
            "db_ti_per_second": tis / self.db_seconds,
            "command_peak_rss_mib": self.ran.max_rss_mib,
            "command_statements": self.ran.statements,
            "worker_statements": self.worker_sql.get("statements"),
            "tries": self.tries,
        }


def drive(stage: Stage, dag_id: str, days: int, *, name: str) -> Drive:
    """`backfill run dag_id -s START -e END` over `days` new dates; its backfill, checked
    (see the module doc)."""
    start, end = stage.calendar.take(dag_id, days)
    before = worker_sql(stage.client)
    argv = ("backfill", "run", dag_id, "-s", start.isoformat(), "-e", end.isoformat())
    ran = stage.commands.run(
        name, *argv, "--output", "json", timeout=DRIVE_TIMEOUT, stdout=Stdout.CAPTURE
    )
    if ran.exit_code != 0:
        raise BenchError(f"{dag_id}: {ran.describe()}")
    backfill_id = int(json.loads(ran.stdout)["id"])
    with stage.engine.connect() as conn:
        found = queries.backfill_row(conn, backfill_id)
        rows = queries.ti_rows(conn, backfill_id)
    if found is None or found[0] != "success":
        raise BenchError(f"backfill {backfill_id} of {dag_id} ended {found and found[0]}")
    again = [r for r in rows if r.state != "success" or r.try_number != 1]
    if again:
        raise BenchError(f"{len(again)} TIs of {dag_id} did not succeed on their first try")
    tries = sum(r.try_number for r in rows)
    return Drive(dag_id, ran, backfill_id, found[1], rows, _worker_delta(stage, before, tries))


def _worker_delta(stage: Stage, before: dict[str, int], tries: int) -> dict[str, int]:
    """What the workers counted since `before`, once every try's count has arrived."""
    if stage.settings.embedded_broker:  # `run`'s own local workers count nothing
        return {}
    # A worker flushes its counts just after its finish, maybe after the
    # coordinator saw SUCCESS: wait for one flush per try at least.
    wait_for(
        "the workers' statement counts",
        lambda: counter(stage.client, keys.TI_TASKS_DONE) - before["tasks"] >= tries,
        30.0,
    )
    after = worker_sql(stage.client)
    return {k: after[k] - before[k] for k in after}


def wait_for(what: str, condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(POLL)


def counter(client: redis.Redis, key: str) -> int:
    return int(client.get(key) or 0)


def worker_sql(client: redis.Redis) -> dict[str, int]:
    return {
        "statements": counter(client, keys.WORKER_STATEMENTS),
        "checkouts": counter(client, keys.WORKER_CHECKOUTS),
        "connects": counter(client, keys.WORKER_CONNECTS),
        "pings": counter(client, keys.WORKER_PINGS),
        "tasks": counter(client, keys.TI_TASKS_DONE),
    }


def warm_up(stage: Stage, processes: int) -> int:
    """Run one-date backfills until every pool process has run an engine task; how many."""
    stage.client.delete(keys.WORKER_PIDS)
    for attempt in range(5):
        drive(stage, "bench_warmup", 1, name=f"warmup-{attempt}")
        if stage.client.scard(keys.WORKER_PIDS) >= processes:
            return attempt + 1
    raise BenchError(f"after 5 warm-up backfills, not all {processes} processes had run a task")


def raw_celery(stage: Stage, count: int) -> dict[str, float]:
    """Publish `count` no-ops to the default queue; time until the workers ran them all."""
    stage.client.delete(keys.NOOP_DONE)
    app = stage.app
    began = time.perf_counter()
    with app.producer_or_acquire() as producer:
        for _ in range(count):
            app.send_task(keys.NOOP_TASK, queue=DEFAULT_QUEUE, producer=producer)
    published = time.perf_counter()

    def done() -> bool:
        return counter(stage.client, keys.NOOP_DONE) >= count

    wait_for(f"{count} no-op tasks", done, 300.0)
    seconds = time.perf_counter() - began
    return {
        "tasks": count,
        "seconds": seconds,
        "publish_seconds": published - began,
        "per_second": count / seconds,
    }


def chain_hops(run: Drive) -> dict[str, Any]:
    """Upstream end_date -> downstream start_date along the chain, in ms (DB rows), and
    its two parts: until the pass that queued the downstream began (its `queued_at`: the
    coordinator's wake-up), and from then to the claim (the pass, publish, delivery)."""
    by_task = {r.task_id: r for r in run.rows}
    order = sorted(by_task)  # hop_00 .. hop_49: the chain's order
    hops, deciding, delivering = [], [], []
    for up, down in itertools.pairwise(order):
        end, queued, start = by_task[up].end_date, by_task[down].queued_at, by_task[down].start_date
        if end is None or queued is None or start is None:
            raise BenchError(f"chain TI {up} or {down} has no end/queued/start date")
        hops.append((start - end).total_seconds() * 1000)
        deciding.append((queued - end).total_seconds() * 1000)
        delivering.append((start - queued).total_seconds() * 1000)
    return {
        "hops": len(hops),
        **stats_ms(hops),
        "wake_mean_ms": statistics.fmean(deciding),
        "pass_to_start_mean_ms": statistics.fmean(delivering),
    }


def stats_ms(values: Sequence[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "mean_ms": statistics.fmean(ordered),
        "p50_ms": statistics.median(ordered),
        "p99_ms": ordered[math.ceil(0.99 * len(ordered)) - 1],  # nearest rank
        "max_ms": ordered[-1],
        "min_ms": ordered[0],
    }
