"""The DAG of the Flower test (tests/integration/test_flower.py): a tiny fan-out."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pendulum

from backfill import DAG, Context


def _support() -> ModuleType:
    # DAG files are imported by path, not as a package: load the helper the same way.
    name = "backfill_it_support"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("_support.py"))
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {name} next to {__file__}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


support: Any = _support()


def quick(ctx: Context) -> None:
    support.timed(ctx, 0.0, 0.01)


flower_small = DAG(
    "flower_small", schedule="@daily", start_date=pendulum.datetime(2016, 1, 1, tz="UTC")
)
_extract = flower_small.add_task("extract", quick)
_transforms = [flower_small.add_task(f"transform_{i}", quick) for i in range(2)]
_extract >> _transforms
