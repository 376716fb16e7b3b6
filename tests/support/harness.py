"""An embedded BACKFILL_HOME for end-to-end tests of the real `backfill` console script.

`embedded_harness(tmp_path)`: a home on the embedded defaults (no database or
broker named), an empty DAGs folder the test fills, the execution ledger
(`support.ledger`), and every process started on them, killed at the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from backfill.config import Settings
from backfill.store import reads, status
from backfill.store.db import create_engine_for
from support.ledger import LEDGER_ENV, Ledger, importable
from support.processes import READY_TIMEOUT, kill_group, processes_of, spawn, tail
from support.waiting import wait_until

REPO = Path(__file__).parents[2]
SCRIPT = Path(sys.executable).with_name("backfill")


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:  # it exited meanwhile
        return b""


@dataclass
class Harness:
    """A BACKFILL_HOME on the embedded defaults (no database or broker named), a DAGs
    folder with the test DAGs, the execution ledger, and the processes started on them."""

    home: Path
    dags: Path
    env: dict[str, str]
    ledger: Ledger
    started: list[subprocess.Popen[str]] = field(default_factory=list)
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def executions(self) -> Counter[tuple[str, str, int]]:
        """How many times each (task_id, ds, try_number) ran to its end."""
        return Counter((e.task_id, e.ds, e.try_number) for e in self.ledger.entries("ran"))

    def cli(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(SCRIPT), *args],
            env=self.env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def popen(self, *args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [str(SCRIPT), *args],
            env=self.env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.started.append(proc)
        return proc

    def settings(self) -> Settings:
        return Settings.from_env(self.env)

    def worker(self, concurrency: int = 2) -> Path:
        """Start `backfill worker -c N` on this home and wait until it is ready; its log.

        For the tests of what a coordinator does, run with `--local-workers 0`: the
        worker is killed at cleanup, where local workers would each cost a warm
        shutdown (~7 s on the embedded broker; the local-workers tests pay it)."""
        log = self.dags.parent / f"worker-{len(self.workers)}.log"
        args = [str(SCRIPT), "worker", "-c", str(concurrency), "-l", "INFO"]
        self.workers.append(spawn(args, self.env, log))
        wait_until(
            lambda: " ready." in log.read_text(errors="replace"),
            timeout=READY_TIMEOUT,
            what="`backfill worker` to be ready",
            explain=lambda: tail(log),
        )
        return log

    def summary(self, backfill_id: int) -> status.Summary:
        engine = create_engine_for(self.settings().database_url)
        try:
            with reads.reading(engine) as conn:
                found = status.summary(conn, backfill_id)
        finally:
            engine.dispose()
        assert found is not None
        return found

    def cleanup(self) -> None:
        for proc in self.started:
            proc.kill()
            proc.communicate(timeout=30)
        for worker in self.workers:
            kill_group(worker)
        for pid in processes_of(self.home):
            os.kill(pid, signal.SIGKILL)


@contextmanager
def embedded_harness(tmp_path: Path) -> Iterator[Harness]:
    dags = tmp_path / "dags"
    dags.mkdir()
    home = tmp_path / "home"
    ledger = Ledger(tmp_path / "ledger")
    env = {
        **importable(dict(os.environ)),  # the DAG files import support.ledger
        LEDGER_ENV: str(ledger.path),
        "BACKFILL_HOME": str(home),
        "BACKFILL_DAGS_FOLDER": str(dags),
        "BACKFILL_HEARTBEAT_INTERVAL": "0.5",
        "BACKFILL_HEARTBEAT_TIMEOUT": "10",
        # kombu's filesystem transport can lose a message under load (a consumer
        # may take a file still being written): bound the re-dispatch wait.
        "BACKFILL_QUEUED_TIMEOUT": "15",
        "COLUMNS": "200",
    }
    for name in ("BACKFILL_DATABASE_URL", "BACKFILL_BROKER_URL", "BACKFILL_TEST_TASK_SLEEP"):
        env.pop(name, None)
    h = Harness(home=home, dags=dags, env=env, ledger=ledger)
    try:
        yield h
    finally:
        h.cleanup()
