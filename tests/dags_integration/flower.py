"""The DAG of the Flower test (tests/integration/test_flower.py): a tiny fan-out and a
task that always fails."""

from __future__ import annotations

import _support as support  # beside this file: the DAGs folder is importable
import pendulum

from backfill import DAG, Context


def quick(ctx: Context) -> None:
    support.timed(ctx, 0.0, 0.01)


def broken(ctx: Context) -> None:
    support.timed(ctx, 0.0, 0.01)
    raise ValueError(f"broken on {ctx.ds}")


flower_small = DAG(
    "flower_small", schedule="@daily", start_date=pendulum.datetime(2016, 1, 1, tz="UTC")
)
_extract = flower_small.add_task("extract", quick)
_transforms = [flower_small.add_task(f"transform_{i}", quick) for i in range(2)]
_extract >> _transforms
flower_small.add_task("broken", broken)
