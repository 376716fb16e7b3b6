"""The execution ledger and the gates: how a test learns which try ran where, and when.

Every test DAG run by real workers records through `record` (the DAG files
`import support.ledger`: `importable(env)` puts `tests/` on the PYTHONPATH of
the processes a test starts); the tests read it back with `Ledger`.

Invariants:
- the ledger is an append-only file of JSON lines with NO uniqueness of any
  kind: every callable start appends a `start` line, so a try that ran twice
  shows twice. Each line is written with ONE `write` on an `O_APPEND`
  descriptor (lines are far below PIPE_BUF), so concurrent worker processes
  never interleave or lose lines;
- times are `time.monotonic()`, one system-wide clock on Linux, so intervals
  written by different processes compare;
- without `BACKFILL_TEST_LEDGER` (e.g. `backfill dags check` on a DAGs folder)
  recording is a no-op, and without `BACKFILL_TEST_GATES` gates never block.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

LEDGER_ENV = "BACKFILL_TEST_LEDGER"
GATES_ENV = "BACKFILL_TEST_GATES"
GATE_PATIENCE = 120.0  # seconds a gated try waits before giving up (a forgotten test)

Key = tuple[str, str, datetime, int]  # (dag_id, task_id, logical_date, try_number)
TESTS = Path(__file__).resolve().parents[1]


def importable(env: dict[str, str]) -> dict[str, str]:
    """`env` with `tests/` first on PYTHONPATH: a subprocess can `import support.ledger`."""
    paths = [str(TESTS), *filter(None, [env.get("PYTHONPATH")])]
    return {**env, "PYTHONPATH": os.pathsep.join(paths)}


# --- writing (in the worker processes) ----------------------------------------------------


def record(event: str, ctx: Any, **extra: Any) -> None:
    """Append one ledger line for this try of `ctx`'s task instance."""
    path = os.environ.get(LEDGER_ENV)
    if not path:
        return
    line = {
        "event": event,
        "dag_id": ctx.dag_id,
        "task_id": ctx.task_id,
        "logical_date": ctx.logical_date.isoformat(),
        "ds": ctx.ds,
        "try_number": ctx.try_number,
        "pid": os.getpid(),
        "at": time.monotonic(),
        **extra,
    }
    data = (json.dumps(line, separators=(",", ":")) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def gate_name(dag_id: str, task_id: str, logical_date: str, try_number: int) -> str:
    return f"{dag_id}.{task_id}.{logical_date}.try{try_number}.open"


def wait_for_gate(ctx: Any) -> None:
    """Block until the test opens this try's gate (creates its file).

    Sleeps in short steps, so a worker that stops the task can interrupt it.
    """
    folder = os.environ.get(GATES_ENV)
    if not folder:
        return
    gate = Path(folder) / gate_name(
        ctx.dag_id, ctx.task_id, ctx.logical_date.isoformat(), ctx.try_number
    )
    deadline = time.monotonic() + GATE_PATIENCE
    while not gate.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {gate.name} was never opened")
        time.sleep(0.02)


# --- reading (in the test) -----------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    event: str  # start / end / after / ...
    dag_id: str
    task_id: str
    logical_date: datetime
    ds: str
    try_number: int
    pid: int
    at: float  # time.monotonic() in the worker: one clock for every process
    extra: dict[str, Any]

    @property
    def key(self) -> Key:
        return (self.dag_id, self.task_id, self.logical_date, self.try_number)


_FIELDS = ("event", "dag_id", "task_id", "logical_date", "ds", "try_number", "pid", "at")


@dataclass(frozen=True)
class Ledger:
    """The execution ledger of one test (or module): one line per callable event."""

    path: Path

    def entries(self, event: str | None = None) -> list[Entry]:
        if not self.path.exists():
            return []
        # A line is complete once its newline is in; a reader polling while a
        # worker appends may see the start of a line: it is read next time.
        *lines, _partial = self.path.read_text().split("\n")
        out = []
        for line in lines:
            raw = json.loads(line)
            entry = Entry(
                **{name: raw.pop(name) for name in _FIELDS if name != "logical_date"},
                logical_date=datetime.fromisoformat(raw.pop("logical_date")),
                extra=raw,
            )
            if event is None or entry.event == event:
                out.append(entry)
        return out

    def starts(self) -> Counter[Key]:
        """How many times each try's callable started."""
        return Counter(e.key for e in self.entries("start"))

    def spans(self) -> dict[Key, tuple[float, float]]:
        """(start, end) of every try whose callable ran to its end."""
        starts = {e.key: e.at for e in self.entries("start")}
        return {e.key: (starts[e.key], e.at) for e in self.entries("end") if e.key in starts}

    def first(self, event: str, key: Key) -> Entry | None:
        return next((e for e in self.entries(event) if e.key == key), None)

    def events(self, task_id: str, event: str | None = None) -> list[Entry]:
        """The entries of every try of `task_id` (of any DAG), of `event` if given."""
        return [e for e in self.entries(event) if e.task_id == task_id]
