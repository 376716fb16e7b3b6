"""DAGs of tests/parity/test_depends.py: depends_on_past and the order of dates.

- `parity_dop`: Airflow's test_depends_on_past DAG: one task `dop` with
  depends_on_past=True (start_date 2016-01-01);
- `parity_backwards`: no depends_on_past, one run at a time, so the order
  the dates ran in is the order the ledger shows.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pendulum

from backfill import DAG, Context


def _parity() -> ModuleType:
    # DAG files are imported by path, not as a package: load the helper the same way.
    name = "backfill_parity_support"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("_parity.py"))
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {name} next to {__file__}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


parity: Any = _parity()
START = pendulum.datetime(2016, 1, 1, tz="UTC")


def short(ctx: Context) -> None:
    parity.timed(ctx, 0.1)


parity_dop = DAG("parity_dop", schedule="@daily", start_date=START)
parity_dop.add_task("dop", short, depends_on_past=True)

parity_backwards = DAG("parity_backwards", schedule="@daily", start_date=START, max_active_runs=1)
parity_backwards.add_task("op", short)
