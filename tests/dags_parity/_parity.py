"""Instrumentation of the parity DAGs (tests/parity/): the integration ledger plus switches.

Not a DAG file (the leading `_` keeps discovery away). The ledger and the
gates folder are the harness's (`tests/support/ledger.py`), so one definition
serves every test DAG.

- `timed(ctx, seconds)`: record `start`, sleep, record `end` (the spans the
  concurrency tests measure);
- `switched(name)`: whether the test created the control file `name` in the
  gates folder (a task that fails "while the switch is on");
  `wait_for_switch(name)` blocks until it exists;
- `starts_so_far(ctx)`: how often this very try's callable started before
  (a sensor counting its pokes; the ledger is the only memory shared by
  worker processes);

Without the ledger environment variable (e.g. `backfill dags check`) every
helper is a no-op and no switch is on.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from support.ledger import GATES_ENV, LEDGER_ENV, Ledger, record


def timed(ctx: Any, seconds: float, **extra: Any) -> None:
    """A task body: record start (with `extra`), sleep `seconds`, record end."""
    record("start", ctx, **extra)
    time.sleep(seconds)
    record("end", ctx)


def switched(name: str) -> bool:
    folder = os.environ.get(GATES_ENV)
    return folder is not None and (Path(folder) / name).exists()


def wait_for_switch(name: str, patience: float = 60.0) -> None:
    """Block until the test turns switch `name` on (a no-op without the ledger environment)."""
    if not os.environ.get(GATES_ENV):
        return
    deadline = time.monotonic() + patience
    while not switched(name):
        if time.monotonic() > deadline:
            raise TimeoutError(f"switch {name} was never turned on")
        time.sleep(0.02)


def starts_so_far(ctx: Any) -> int:
    """Ledger `start` lines of this try (same DAG, task, date and try number)."""
    path = os.environ.get(LEDGER_ENV)
    if not path:
        return 0
    wanted = (ctx.dag_id, ctx.task_id, ctx.logical_date, ctx.try_number)
    return Ledger(Path(path)).starts()[wanted]
