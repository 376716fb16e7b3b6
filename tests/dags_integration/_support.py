"""Instrumentation shared by the integration DAGs: an execution ledger and gates.

Not a DAG file (the leading `_` keeps discovery away); the DAG files load it
by path, and so do the tests, so the ledger format and gate names are defined
once.

Invariants:
- the ledger is an append-only file of JSON lines with NO uniqueness of any
  kind: every callable start appends a `start` line, so a try that ran twice
  shows twice. Each line is written with ONE `write` on an `O_APPEND`
  descriptor (lines are far below PIPE_BUF), so concurrent worker processes
  never interleave or lose lines;
- times are `time.monotonic()`, one system-wide clock on Linux, so intervals
  written by different processes compare;
- without `BACKFILL_IT_LEDGER` (e.g. `backfill dags check` on this folder)
  recording is a no-op and gates never block.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from typing import Any

LEDGER_ENV = "BACKFILL_IT_LEDGER"
GATES_ENV = "BACKFILL_IT_GATES"
GATE_PATIENCE = 120.0  # seconds a gated try waits before giving up (a forgotten test)


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


def timed(ctx: Any, low: float, high: float) -> None:
    """A task body: record start, sleep a random time in [low, high] seconds, record end."""
    record("start", ctx)
    time.sleep(random.uniform(low, high))
    record("end", ctx)


def held_first_try(ctx: Any) -> None:
    """Try 1 blocks on its gate, then fails late; any later try succeeds at once.

    A late outcome of try 1 that got through its fencing would turn the TI
    into failed/up_for_retry with this error, which the tests look for.
    """
    record("start", ctx)
    if ctx.try_number == 1:
        wait_for_gate(ctx)
        record("after", ctx)
        raise RuntimeError("late outcome of try 1")
    record("end", ctx)
