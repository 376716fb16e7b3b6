"""The bench's Celery workers: `celery -A benchmarks.worker_app worker -c C` processes.

A `Shape` is `count` worker processes of `concurrency` pool processes each
(`1x2`: one `-c 2`; `2x1`: two `-c 1`), all consuming the default queue. They
are the product's `LocalWorkers` (started one after the other, ready before
use, stopped warmly, killed with the bench), running the bench's app, with
BENCH_REDIS_URL set (where `benchmarks.worker_app` keeps its counters).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from backfill.client.local_workers import LocalWorkers
from backfill.config import Settings

WORKER_APP = "benchmarks.worker_app"
REDIS_ENV = "BENCH_REDIS_URL"


@dataclass(frozen=True)
class Shape:
    """`count` worker processes of `concurrency` pool processes each."""

    count: int
    concurrency: int

    @property
    def name(self) -> str:
        return f"{self.count}x{self.concurrency}"

    @property
    def processes(self) -> int:
        """The pool processes that run tasks, over every worker."""
        return self.count * self.concurrency

    def describe(self) -> str:
        plural = "s" if self.count > 1 else ""
        return f"{self.count} celery worker{plural} -c {self.concurrency}"


def workers(settings: Settings, shape: Shape, *, redis_url: str, logs: Path) -> LocalWorkers:
    """The worker processes of `shape`, for the span of a `with` block."""
    return LocalWorkers(
        settings,
        shape.count,
        app=WORKER_APP,
        concurrency=shape.concurrency,
        env={REDIS_ENV: redis_url},
        log_folder=logs,
    )
