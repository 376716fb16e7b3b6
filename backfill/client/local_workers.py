"""Local Celery workers for the embedded default (`backfill run --local-workers N`).

Invariants:
- every worker is a real `celery -A workers worker -c 1` subprocess (the app and
  `-c` can be chosen) with the BACKFILL_* environment of the `Settings` it was
  started for, so it sees the same database, broker and DAGs folder as the
  coordinator that started it;
- each worker runs in a session (process group) of its own: a Ctrl-C at the
  terminal reaches the coordinator only, which then stops the workers itself,
  warmly. On Linux a worker is also sent SIGTERM when the thread that started
  it dies, so a killed `backfill run` leaves no worker consuming behind it;
- entering returns only once every worker has logged that it is ready; a
  worker that dies or stays silent instead raises `LocalWorkersError` with the
  tail of its log, after every worker already started has been stopped;
- leaving always stops every worker and its pool children: SIGTERM first
  (Celery's warm shutdown: a running try finishes and records its outcome),
  then SIGKILL to the worker's process group after `stop_timeout`;
- on an embedded broker, starting clears the transport's stale files (see
  `clear_stale_broker_files`). Task messages are never among them: one may be
  the only doorbell of a TI queued before an interrupted run, and a stale one
  is harmless (its claim loses and the worker acks it as a no-op).
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
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType

from backfill.client.errors import LocalWorkersError
from backfill.config import Settings
from backfill.model.dag import DAG
from backfill.model.task_options import DEFAULT_QUEUE

READY_MARK = " ready."
_LOG_TAIL_LINES = 30
_POLL = 0.1  # seconds between checks of a starting worker
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def settings_env(settings: Settings) -> dict[str, str]:
    """The BACKFILL_* variables that make another process use exactly `settings`."""
    return {
        "BACKFILL_HOME": str(settings.home),
        "BACKFILL_DATABASE_URL": settings.database_url,
        "BACKFILL_BROKER_URL": settings.broker_url,
        "BACKFILL_DAGS_FOLDER": str(settings.dags_folder),
        "BACKFILL_HEARTBEAT_INTERVAL": repr(settings.heartbeat_interval),
        "BACKFILL_HEARTBEAT_TIMEOUT": repr(settings.heartbeat_timeout),
        "BACKFILL_QUEUED_TIMEOUT": repr(settings.queued_timeout),
    }


def dag_queues(dag: DAG) -> tuple[str, ...]:
    """The distinct Celery queues of the DAG's tasks, sorted."""
    return tuple(sorted({t.options.queue for t in dag.tasks.values()})) or (DEFAULT_QUEUE,)


def clear_stale_broker_files(folder: Path) -> int:
    """Delete the embedded transport's leftovers in `folder`; how many files went.

    Stale: copies of consumed messages (a `processed` folder), and everything
    of Celery's own remote-control and event exchanges (`*pidbox*`,
    `celeryev*`): their tables still bind the queues of workers that have
    exited, so every broadcast would add messages nobody reads. The local
    workers declare theirs again when they start. Task messages and the
    tables routing to task queues stay (see the module invariants).
    """
    removed = 0
    if not folder.is_dir():
        return removed
    for path in sorted(folder.rglob("*")):
        if path.is_file() and _is_stale(path.relative_to(folder)):
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def _is_stale(relative: Path) -> bool:
    if {"processed", "staging"} & set(relative.parts[:-1]):  # consumed, or a half-written publish
        return True
    name = relative.name
    if name.endswith(".exchange"):  # a table of bindings: "<exchange>.exchange"
        target = name.removesuffix(".exchange")
    elif name.endswith(".msg"):  # a message: "<stamp>_<uuid>.<queue>.msg"
        target = name.partition(".")[2].removesuffix(".msg")
    else:
        return False
    return "pidbox" in target or target.startswith("celeryev")


class LocalWorkers:
    """`count` local `celery worker` processes, for the span of a `with` block."""

    def __init__(
        self,
        settings: Settings,
        count: int,
        *,
        queues: Iterable[str] = (DEFAULT_QUEUE,),
        app: str = "workers",
        concurrency: int = 1,
        env: Mapping[str, str] | None = None,
        log_folder: Path | None = None,
        ready_timeout: float = 120.0,
        stop_timeout: float = 60.0,
    ) -> None:
        """`concurrency`: pool processes per worker (`-c`); `env`: variables added to
        the BACKFILL_* ones of `settings`; `log_folder`: default `<home>/logs`."""
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        self.settings = settings
        self.count = count
        self.queues = tuple(queues) or (DEFAULT_QUEUE,)
        self.app = app
        self.concurrency = concurrency
        self.env = dict(env or {})
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.log_folder = log_folder or settings.home / "logs"
        self._procs: list[tuple[str, subprocess.Popen[bytes], Path]] = []  # not stopped yet
        self.pids: list[int] = []  # of every worker started, for reports and tests
        self.logs: list[Path] = []
        self._ready: set[str] = set()  # names of the workers known to be ready

    def __enter__(self) -> LocalWorkers:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start the workers and wait until each is ready (see the module invariants)."""
        if self.count == 0:
            return
        if self.settings.embedded_broker:
            clear_stale_broker_files(self.settings.broker_folder)
        self.log_folder.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **settings_env(self.settings), **self.env}
        try:
            # The first alone: it creates the transport's exchange tables, which
            # kombu's filesystem transport cannot create safely from two processes
            # at once (one may read the other's file before it is written).
            names = [f"local{i}-{uuid.uuid4().hex[:8]}" for i in range(self.count)]
            self._spawn(names[0], env)
            self._wait_ready()
            for name in names[1:]:
                self._spawn(name, env)
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _spawn(self, name: str, env: dict[str, str]) -> None:
        log = self.log_folder / f"{name}.log"
        command = [
            *(sys.executable, "-m", "celery", "-A", self.app, "worker"),
            *("-c", str(self.concurrency)),
            *("-n", f"{name}@%h", "--without-mingle", "--without-gossip"),
            *("-l", "INFO", "-Q", ",".join(self.queues)),
        ]
        with log.open("wb") as out:
            proc = subprocess.Popen(
                command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                # Safe with threads: it only calls a C function resolved before the fork.
                preexec_fn=_parent_death_signal(),  # noqa: PLW1509
            )
        self._procs.append((name, proc, log))
        self.pids.append(proc.pid)
        self.logs.append(log)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        waiting = [entry for entry in self._procs if entry[0] not in self._ready]
        while waiting:
            for entry in list(waiting):
                name, proc, log = entry
                if proc.poll() is not None:
                    raise LocalWorkersError(
                        f"local worker {name} exited with code {proc.returncode} while "
                        f"starting; the end of its log {log}:\n{_tail(log)}"
                    )
                if _is_ready(name, log):
                    waiting.remove(entry)
                    self._ready.add(name)
            if waiting and time.monotonic() > deadline:
                name, _, log = waiting[0]
                raise LocalWorkersError(
                    f"local worker {name} was not ready after {self.ready_timeout:g}s; "
                    f"the end of its log {log}:\n{_tail(log)}"
                )
            if waiting:
                time.sleep(_POLL)

    def pool_pids(self) -> list[int]:
        """The pool processes of the running workers: those that run the tasks."""
        pids = []
        for _, proc, _ in self._procs:
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")  # Linux
            with contextlib.suppress(OSError):
                pids += [int(pid) for pid in children.read_text().split()]
        return pids

    def exited(self) -> list[tuple[str, int, Path]]:
        """(name, exit code, log) of each worker that has exited since it started."""
        return [
            (name, proc.returncode, log)
            for name, proc, log in self._procs
            if proc.poll() is not None
        ]

    def stop(self) -> None:
        """Warm shutdown, then SIGKILL what is left after `stop_timeout`. Idempotent."""
        for _, proc, _ in self._procs:
            if proc.poll() is None:
                _signal(proc.pid, signal.SIGTERM, group=False)
        deadline = time.monotonic() + self.stop_timeout
        for _, proc, _ in self._procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal(proc.pid, signal.SIGKILL, group=True)
                proc.wait()
            # A pool child outliving its main process would keep its try alive.
            # Only now, right after reaping: later the id may name another group.
            _signal(proc.pid, signal.SIGKILL, group=True)
        self._procs.clear()


def _is_ready(name: str, log: Path) -> bool:
    # Celery logs "<name>@<host> ready." once it consumes; only that line will do.
    return any(
        f"{name}@" in line and line.rstrip().endswith(READY_MARK)
        for line in log.read_text(errors="replace").splitlines()
    )


def _signal(pid: int, signum: signal.Signals, *, group: bool) -> None:
    try:
        if group:
            os.killpg(pid, signum)  # a worker leads its own session and process group
        else:
            os.kill(pid, signum)
    except ProcessLookupError:
        pass  # already gone


def _parent_death_signal() -> Callable[[], None] | None:
    """A preexec function asking Linux to SIGTERM the child when its parent dies; else None."""
    if not sys.platform.startswith("linux"):
        return None
    # Resolved here, in the parent: between fork and exec the child only calls it.
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def _set() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return _set


def _tail(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError as exc:
        return f"(cannot read it: {exc})"
    return "\n".join(lines[-_LOG_TAIL_LINES:]) or "(empty)"
