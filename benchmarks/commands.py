"""The user's commands as the bench runs them: `python -m benchmarks.counted backfill ...`.

Invariants:
- every command runs in a process of its own through `benchmarks.counted`,
  so the SQL statements and peak RSS reported are that command's alone;
- its environment is the bench's minus any inherited BACKFILL_* variable,
  plus exactly the variables a user would set (`Commands.variables`);
- its wall time is measured here, from launch to exit;
- stderr (and stdout, unless captured or discarded) goes to
  `<logs>/<name>.log`; the counts line to `<logs>/<name>.counts.jsonl`;
- a command still running at its timeout is killed and reported as timed
  out (`exit_code` None, no counts), never waited for forever.
"""

from __future__ import annotations

import enum
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from benchmarks.counted import COUNTS_ENV, PROFILE_ENV

STOP_TIMEOUT = 60.0  # seconds a stopped command may take to exit cleanly


class Stdout(enum.Enum):
    CAPTURE = "capture"  # kept in `Ran.stdout`
    DISCARD = "discard"  # to /dev/null, as `> /dev/null`
    LOG = "log"  # with stderr, in the command's log


@dataclass(frozen=True)
class Ran:
    """One command: how it ended, how long it took, what it sent to the database."""

    name: str
    argv: tuple[str, ...]
    exit_code: int | None  # None: timed out and killed
    seconds: float  # launch to exit
    counts: dict[str, Any] | None  # `benchmarks.counted`'s line; None if it never wrote one
    stdout: str
    log: Path

    @property
    def statements(self) -> int:
        return int(self.counts["statements"]) if self.counts else 0

    @property
    def max_rss_mib(self) -> float | None:
        return self.counts["max_rss_kib"] / 1024 if self.counts else None

    def describe(self) -> str:
        if self.exit_code is None:
            return f"`{' '.join(self.argv)}` timed out after {self.seconds:.0f}s; see {self.log}"
        return f"`{' '.join(self.argv)}` exited {self.exit_code}; see {self.log}"


class Running:
    """A command started in the background (a `backfill coordinator`)."""

    def __init__(self, commands: Commands, name: str, argv: tuple[str, ...], out: Stdout) -> None:
        self._commands = commands
        self.name = name
        self.argv = argv
        self.began = time.perf_counter()
        self.started_at = time.time()  # wall clock, to compare with the database's dates
        self._stdout_path = commands.logs / f"{name}.stdout"
        self._log = commands.logs / f"{name}.log"
        with self._log.open("wb") as err, _stdout_file(out, self._stdout_path) as stdout:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.counted", *argv],
                env=commands.prepare(name),
                stdin=subprocess.DEVNULL,
                stdout=err if out is Stdout.LOG else stdout,
                stderr=err,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait(self, timeout: float) -> Ran:
        """Until it exits (killed after `timeout`)."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return self._ran(None)
        return self._ran(self.proc.returncode)

    def stop(self) -> Ran:
        """SIGTERM (a clean stop), then wait for it to exit."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(STOP_TIMEOUT)

    def _ran(self, code: int | None) -> Ran:
        seconds = time.perf_counter() - self.began
        stdout = self._stdout_path.read_text() if self._stdout_path.exists() else ""
        counts = self._commands.counts(self.name) if code is not None else None
        return Ran(self.name, self.argv, code, seconds, counts, stdout, self._log)


class Commands:
    """Runs `backfill` commands with one environment, logging into `logs`."""

    def __init__(self, variables: dict[str, str], logs: Path) -> None:
        self.variables = variables
        self.logs = logs
        self.profile_next: Path | None = None  # cProfile the next command started

    def prepare(self, name: str) -> dict[str, str]:
        """The environment of command `name`; clears its last counts, takes `profile_next`."""
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("BACKFILL_")}
        env = {**inherited, **self.variables, COUNTS_ENV: str(self.logs / f"{name}.counts.jsonl")}
        (self.logs / f"{name}.counts.jsonl").unlink(missing_ok=True)
        if self.profile_next is not None:
            env[PROFILE_ENV] = str(self.profile_next)
            self.profile_next = None
        return env

    def counts(self, name: str) -> dict[str, Any] | None:
        path = self.logs / f"{name}.counts.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        return json.loads(lines[-1]) if lines else None

    def start(self, name: str, *argv: str, stdout: Stdout = Stdout.LOG) -> Running:
        self.logs.mkdir(parents=True, exist_ok=True)
        return Running(self, name, argv, stdout)

    def run(self, name: str, *argv: str, timeout: float, stdout: Stdout = Stdout.LOG) -> Ran:
        return self.start(name, *argv, stdout=stdout).wait(timeout)


def _stdout_file(out: Stdout, path: Path) -> AbstractContextManager[IO[bytes] | int]:
    """Where a command's stdout goes: a file to capture it, else nowhere or its log."""
    path.unlink(missing_ok=True)
    if out is Stdout.CAPTURE:
        return path.open("wb")
    return nullcontext(subprocess.DEVNULL)
