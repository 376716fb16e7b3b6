"""Instrumentation of the parity DAGs (tests/parity/): the integration ledger plus switches.

Not a DAG file (the leading `_` keeps discovery away). The ledger format and
the gates folder are the integration tests' (`tests/dags_integration/_support.py`),
loaded by path under the same module name, so one definition serves both.

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

import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any


def _integration_support() -> ModuleType:
    name = "_support"  # the name the integration DAGs import it by (their folder is on sys.path)
    if name not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "dags_integration" / "_support.py"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


support: Any = _integration_support()
record = support.record


def timed(ctx: Any, seconds: float, **extra: Any) -> None:
    """A task body: record start (with `extra`), sleep `seconds`, record end."""
    record("start", ctx, **extra)
    time.sleep(seconds)
    record("end", ctx)


def switched(name: str) -> bool:
    folder = os.environ.get(support.GATES_ENV)
    return folder is not None and (Path(folder) / name).exists()


def wait_for_switch(name: str, patience: float = 60.0) -> None:
    """Block until the test turns switch `name` on (a no-op without the ledger environment)."""
    if not os.environ.get(support.GATES_ENV):
        return
    deadline = time.monotonic() + patience
    while not switched(name):
        if time.monotonic() > deadline:
            raise TimeoutError(f"switch {name} was never turned on")
        time.sleep(0.02)


def starts_so_far(ctx: Any) -> int:
    """Ledger `start` lines of this try (same DAG, task, date and try number)."""
    path = os.environ.get(support.LEDGER_ENV)
    if not path or not Path(path).exists():
        return 0
    wanted = (ctx.dag_id, ctx.task_id, ctx.logical_date.isoformat(), ctx.try_number)
    count = 0
    # A line is complete once its newline is in (another process may be appending).
    for line in Path(path).read_text().split("\n")[:-1]:
        raw = json.loads(line)
        key = (raw["dag_id"], raw["task_id"], raw["logical_date"], raw["try_number"])
        count += raw["event"] == "start" and key == wanted
    return count
