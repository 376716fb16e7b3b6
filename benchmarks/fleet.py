"""The bench's Celery workers: `celery -A benchmarks.worker_app worker -c C` processes.

Invariants:
- a `Shape` is `count` worker processes of `concurrency` prefork children
  each (`1x2`: one `-c 2`; `2x1`: two `-c 1`), all consuming the default
  queue only, with the BACKFILL_* environment of the bench's `Settings` and
  BENCH_REDIS_URL (where `benchmarks.worker_app` keeps its counters);
- each worker leads a session of its own, and on Linux gets SIGTERM when the
  bench dies, so a killed bench leaves no worker consuming behind it;
- entering returns once every worker has logged `<name>@<host> ready.`; one
  that exits or stays silent instead raises `WorkerError` naming its log.
  Workers start one after the other: on `filesystem://` the first creates
  the exchange tables, which two workers cannot safely create at once;
- leaving stops them warmly: SIGTERM (Celery's warm shutdown: a running task
  finishes), then SIGKILL to the worker's process group after STOP_TIMEOUT.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from backfill.config import Settings
from backfill.local_workers import settings_env
from backfill.task_options import DEFAULT_QUEUE

WORKER_APP = "benchmarks.worker_app"
REDIS_ENV = "BENCH_REDIS_URL"
READY_TIMEOUT = 60.0  # seconds
STOP_TIMEOUT = 30.0  # seconds
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


class WorkerError(RuntimeError):
    """A worker did not start."""


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


class Workers:
    """The worker processes of one `Shape`, for the span of a `with` block."""

    def __init__(self, settings: Settings, shape: Shape, *, redis_url: str, logs: Path) -> None:
        self.settings = settings
        self.shape = shape
        self.redis_url = redis_url
        self.logs = logs
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Workers:
        try:
            for index in range(self.shape.count):  # one at a time: see the module doc
                self._wait_ready(self._spawn(index))
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _spawn(self, index: int) -> str:
        name = f"bench{index}-{self.shape.name}-{uuid.uuid4().hex[:6]}"
        self.logs.mkdir(parents=True, exist_ok=True)
        command = [
            *(sys.executable, "-m", "celery", "-A", WORKER_APP, "worker"),
            *("-c", str(self.shape.concurrency), "-n", f"{name}@%h", "-Q", DEFAULT_QUEUE),
            *("--without-mingle", "--without-gossip", "-l", "INFO"),
        ]
        env = {**os.environ, **settings_env(self.settings), REDIS_ENV: self.redis_url}
        with (self.logs / f"{name}.log").open("wb") as out:
            self.procs.append(
                subprocess.Popen(
                    command,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=_parent_death_signal(),  # noqa: PLW1509 (a C call, resolved before)
                )
            )
        return name

    def _wait_ready(self, name: str) -> None:
        deadline, proc = time.monotonic() + READY_TIMEOUT, self.procs[-1]
        log = self.logs / f"{name}.log"
        while not any(
            f"{name}@" in line and line.rstrip().endswith(" ready.")
            for line in log.read_text(errors="replace").splitlines()
        ):
            if proc.poll() is not None:
                raise WorkerError(f"worker {name} exited {proc.returncode}; see {log}")
            if time.monotonic() > deadline:
                raise WorkerError(f"worker {name} not ready after {READY_TIMEOUT:g}s; see {log}")
            time.sleep(0.1)

    def pool_pids(self) -> list[int]:
        """The pool children that run the tasks (for a profiler to attach to)."""
        pids = []
        for proc in self.procs:
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
            if children.exists():
                pids += [int(pid) for pid in children.read_text().split()]
        return pids

    def stop(self) -> None:
        """Warm shutdown, then SIGKILL what is left after STOP_TIMEOUT. Idempotent."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _kill_group(proc.pid)
                proc.wait()
            _kill_group(proc.pid)  # a pool child outliving its worker; right after reaping
        self.procs.clear()


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def _parent_death_signal() -> Callable[[], None] | None:
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here, in the parent

    def _set() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return _set
