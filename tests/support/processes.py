"""The real processes of a test, and how the test controls them.

- `WorkerPool.start`: `celery -A workers worker -c N [-Q queues]` processes,
  each in a session of its own (so a whole worker, main process and pool child, is one
  process group to SIGKILL / SIGSTOP / SIGCONT), returned once each has
  logged Celery's "ready." line.
- `Coordinators`: coordinator threads (`Coordinator(...).drive` in this
  process, each with its own engine) and `python -m backfill.cli ...`
  subprocesses.

- `alive`, `group_members`, `processes_of`: processes as /proc shows them (a
  zombie is not alive), to check that nothing a test started outlives it.

Every process started here is killed by the owning fixture's teardown, by its
own process group id; a stopped one is sent SIGCONT first.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from backfill.engine.coordinator import Coordinator
from backfill.model.dag import DAG
from backfill.store.db import create_engine_for

from .netns import Host
from .stack import PROJECT, Stack
from .waiting import wait_until

READY_TIMEOUT = 60.0  # seconds a starting worker may take on a loaded CI machine
LOG_TAIL = 40


def tail(path: Path, lines: int = LOG_TAIL) -> str:
    if not path.exists():
        return f"({path.name}: no output)"
    text = path.read_text(errors="replace").splitlines()[-lines:]
    return f"--- last lines of {path.name} ---\n" + "\n".join(text)


def spawn(
    args: list[str], env: dict[str, str], log: Path, *, errors: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start `args`, its output appended to `log` (stderr to `errors` if given)."""
    with log.open("ab") as out, (errors or log).open("ab") as err:
        # A session of its own: one process group to signal as a whole, and no
        # terminal signal reaches it by accident.
        return subprocess.Popen(
            args,
            env=env,
            cwd=PROJECT,
            stdout=out,
            stderr=subprocess.STDOUT if errors is None else err,
            start_new_session=True,
        )


def _on(host: Host | None, argv: list[str]) -> list[str]:
    return argv if host is None else host.wrap(argv)


def kill_group(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        for sig in (signal.SIGCONT, signal.SIGKILL):  # a stopped group must not linger
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
    process.wait(timeout=30)


# --- processes as /proc shows them ----------------------------------------------------


def _stat(pid: int | str) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first); None if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def _live() -> Iterator[tuple[int, list[str]]]:
    """(pid, stat fields) of every process that is neither gone nor a zombie."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(entry.name)) and fields[0] != "Z":
            yield int(entry.name), fields


def alive(pid: int) -> bool:
    """Whether `pid` is a live (not zombie) process."""
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def group_members(pgid: int) -> list[int]:
    """Live processes of process group `pgid` (a worker and its pool children)."""
    return [pid for pid, fields in _live() if int(fields[2]) == pgid]


def processes_of(home: Path) -> list[int]:
    """Live processes (not this one) whose environment names `home` as BACKFILL_HOME."""
    marker = f"BACKFILL_HOME={home}".encode()
    found = []
    for pid, _ in _live():
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if pid != os.getpid() and marker in environ:
            found.append(pid)
    return found


# --- workers ---------------------------------------------------------------------------


@dataclass
class Worker:
    """One `celery -A workers worker` process and its pool children."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def signal(self, sig: signal.Signals) -> None:
        """Signal the whole worker: the main process and its pool child."""
        os.killpg(self.process.pid, sig)

    def owns(self, pid: int) -> bool:
        """Whether process `pid` (e.g. a ledger line's) belongs to this worker."""
        try:
            return os.getpgid(pid) == self.process.pid
        except ProcessLookupError:
            return False

    def output(self) -> str:
        return _read(self.log)

    def count(self, text: str) -> int:
        """How many times `text` occurs in the worker's log."""
        return self.output().count(text)

    def is_ready(self) -> bool:
        if self.process.poll() is not None:
            pytest.fail(f"worker {self.name} exited ({self.process.returncode})\n{tail(self.log)}")
        return " ready." in self.output()

    def received(self) -> int:
        """Task messages this worker received (Celery's own INFO line per message)."""
        return self._count(" received")

    def finished(self) -> int:
        """Task executions this worker ended: returned, raised, or ignored as a no-op
        (Celery's own lines)."""
        return self._count(" succeeded in ") + self._count(" raised ") + self._count("] ignored")

    def _count(self, marker: str) -> int:
        return sum(
            1
            for line in self.output().splitlines()
            if "backfill.run_task_instance[" in line and marker in line
        )


class WorkerPool:
    """Real worker processes of one test; every one is killed at teardown."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.started: list[Worker] = []

    def start(
        self,
        stack: Stack,
        count: int,
        *,
        concurrency: int = 1,
        queues: str | None = None,
        host: Host | None = None,
        env: Mapping[str, str] | None = None,
        app: str = "workers",
    ) -> list[Worker]:
        """Start `count` workers of Celery app `app` (`-c concurrency` each, consuming
        `queues`: comma-separated, None for the default queue; in `host`'s network namespace
        if given; with `env` over the stack's environment) and wait until every one is
        ready."""
        batch = []
        for _ in range(count):
            name = f"w{len(self.started)}-{uuid.uuid4().hex[:6]}"
            args = [
                sys.executable, "-m", "celery", "-A", app, "worker",
                "-c", str(concurrency), "-n", f"{name}@%h", "-l", "INFO",
                "--without-mingle", "--without-gossip",
                *(["-Q", queues] if queues else []),
            ]  # fmt: skip
            log = self.logs / f"worker-{name}.log"
            worker = Worker(name, spawn(_on(host, args), {**stack.env(), **(env or {})}, log), log)
            self.started.append(worker)
            batch.append(worker)
        wait_until(
            lambda: all(w.is_ready() for w in batch),
            timeout=READY_TIMEOUT,
            what=f"{count} worker(s) to log ready",
            interval=0.1,
            explain=lambda: "\n".join(tail(w.log) for w in batch),
        )
        return batch

    def owner_of(self, pid: int) -> Worker:
        for worker in self.started:
            if worker.owns(pid):
                return worker
        pytest.fail(f"process {pid} belongs to no worker of this test")

    def logs_tail(self) -> str:
        return "\n".join(tail(w.log) for w in self.started)

    def kill_all(self) -> None:
        for worker in self.started:
            kill_group(worker.process)


# --- coordinators ----------------------------------------------------------------------


@dataclass(frozen=True)
class Finished:
    """A `backfill ...` command that ended."""

    args: tuple[str, ...]
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    @property
    def log(self) -> str:
        """The command, its exit code and its output: the message of a failed assertion."""
        return f"`backfill {' '.join(self.args)}` exited {self.code}\n{self.output}"


@dataclass
class CliProcess:
    """A `python -m backfill.cli ...` subprocess (a coordinator for `run` / `resume`),
    its stdout and stderr each in a file."""

    args: tuple[str, ...]
    process: subprocess.Popen[bytes]
    out: Path
    err: Path

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            command = " ".join(self.args)
            pytest.fail(f"`backfill {command}` still running after {timeout:g}s\n{tail(self.err)}")

    def finish(self, timeout: float) -> Finished:
        """Wait for the command to end; what it exited with and wrote."""
        code = self.wait(timeout)
        return Finished(self.args, code, _read(self.out), _read(self.err))

    def output(self) -> str:
        return _read(self.out) + _read(self.err)

    def tails(self) -> str:
        return f"{tail(self.out)}\n{tail(self.err)}"


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


class CoordinatorThread(threading.Thread):
    """`Coordinator(engine, settings, dag).drive(backfill_id, stop=...)` in a thread."""

    def __init__(self, stack: Stack, dag: DAG, backfill_id: int, **kwargs: Any) -> None:
        super().__init__(name=f"coordinator-{backfill_id}", daemon=True)
        self.stack, self.dag, self.backfill_id, self.kwargs = stack, dag, backfill_id, kwargs
        self.stop = threading.Event()
        self.outcome: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        engine = create_engine_for(self.stack.db_url)
        try:
            coordinator = Coordinator(engine, self.stack.settings(), self.dag, **self.kwargs)
            try:
                self.outcome = coordinator.drive(self.backfill_id, stop=self.stop)
            finally:
                coordinator.close()
        except BaseException as exc:  # re-raised in the test's thread by result()
            self.error = exc
        finally:
            engine.dispose()

    def result(self, timeout: float) -> Any:
        """Wait for `drive` to return; its outcome (re-raising what it raised)."""
        self.join(timeout)
        if self.is_alive():
            self.stop.set()
            pytest.fail(
                f"the coordinator of backfill {self.backfill_id} still drives after {timeout:g}s"
            )
        if self.error is not None:
            raise self.error
        return self.outcome


class Coordinators:
    """Coordinator threads and CLI subprocesses of one test, all stopped at teardown."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.threads: list[CoordinatorThread] = []
        self.processes: list[CliProcess] = []

    def thread(self, stack: Stack, dag: DAG, backfill_id: int, **kwargs: Any) -> CoordinatorThread:
        coordinator = CoordinatorThread(stack, dag, backfill_id, **kwargs)
        coordinator.start()
        self.threads.append(coordinator)
        return coordinator

    def cli(self, stack: Stack, *args: str, host: Host | None = None) -> CliProcess:
        """Start `backfill ARGS` on `stack` (in `host`'s network namespace if given)."""
        name = self.logs / f"cli-{len(self.processes)}-{args[0]}"
        out, err = name.with_suffix(".out"), name.with_suffix(".err")
        argv = [sys.executable, "-m", "backfill.cli", *args]
        process = spawn(_on(host, argv), stack.env(), out, errors=err)
        self.processes.append(CliProcess(args, process, out, err))
        return self.processes[-1]

    def close(self) -> None:
        for coordinator in self.threads:
            coordinator.stop.set()
        for cli in self.processes:
            kill_group(cli.process)
        for coordinator in self.threads:
            coordinator.join(timeout=30)
        for cli in self.processes:
            print(cli.tails())  # shown by pytest when the test failed


@dataclass(frozen=True)
class Cli:
    """The command line on one stack: `cli(*args)` runs `backfill ARGS` to its end,
    `cli.start(*args)` leaves it running. Its processes are the `coordinators`'."""

    coordinators: Coordinators
    stack: Stack
    timeout: float  # seconds a command run to its end may take

    def start(self, *args: str) -> CliProcess:
        return self.coordinators.cli(self.stack, *args)

    def __call__(self, *args: str) -> Finished:
        return self.start(*args).finish(self.timeout)
