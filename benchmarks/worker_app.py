"""The Celery app the bench's workers run: the product's app, plus a no-op and counters.

`celery -A benchmarks.worker_app worker` runs what `celery -A workers worker`
runs - the app of `workers.app.make_app(Settings.from_env())`, with its
settings and its `backfill.run_task_instance` - and adds:
- `benchmarks.noop`: a plain registered task that only INCRs `NOOP_DONE` in
  Redis; timing N of them through the same broker, queue and processes gives
  the raw Celery throughput the engine is compared with;
- statement counting (`benchmarks.sqlcount`) in every process, flushed after
  each engine task as one pipelined INCRBY (the no-op's single INCR is its
  counterpart), with `TI_TASKS_DONE` counting the engine tasks flushed, so the
  bench knows when the last count has arrived;
- `WORKER_PIDS`: the processes that have run an engine task (warm-up check).

The counters (`benchmarks.keys`) live in the Redis DB index the bench owns:
BENCH_REDIS_URL, else the broker's URL (on the embedded `filesystem://`
broker the bench still counts in its Redis index).
"""

from __future__ import annotations

import os
from typing import Any

import redis
from celery.signals import task_postrun

from backfill.config import Settings
from backfill.messages import TASK_NAME
from benchmarks.keys import (
    NOOP_DONE,
    NOOP_TASK,
    TI_TASKS_DONE,
    WORKER_CHECKOUTS,
    WORKER_CONNECTS,
    WORKER_PIDS,
    WORKER_PINGS,
    WORKER_STATEMENTS,
)
from benchmarks.sqlcount import Counts, SQLCounter
from workers.app import make_app

settings = Settings.from_env()
app = make_app(settings)
_counter = SQLCounter().install()


class _Redis:
    """One client per process (a client inherited through fork shares its sockets).

    `flushed` is what the process has already added to Redis; a pool child
    inherits it together with the counts, so the two stay consistent.
    """

    def __init__(self, url: str) -> None:
        self._url = url
        self._pid = -1
        self._client: redis.Redis | None = None
        self.flushed = Counts()

    def get(self) -> redis.Redis:
        if self._client is None or self._pid != os.getpid():
            self._client = redis.Redis.from_url(self._url)
            self._pid = os.getpid()
        return self._client


_redis = _Redis(os.environ.get("BENCH_REDIS_URL") or settings.broker_url)


@app.task(name=NOOP_TASK, ignore_result=True)
def noop() -> None:
    _redis.get().incr(NOOP_DONE)


@task_postrun.connect
def _flush(sender: Any = None, **_: Any) -> None:
    if getattr(sender, "name", None) != TASK_NAME:
        return
    client = _redis.get()
    now = _counter.read()
    delta, _redis.flushed = now - _redis.flushed, now
    pipe = client.pipeline(transaction=False)
    pipe.incrby(WORKER_STATEMENTS, delta.statements)
    pipe.incrby(WORKER_CHECKOUTS, delta.checkouts)
    pipe.incrby(WORKER_CONNECTS, delta.connects)
    pipe.incrby(WORKER_PINGS, delta.pings)
    pipe.sadd(WORKER_PIDS, os.getpid())
    pipe.incr(TI_TASKS_DONE)
    pipe.execute()
