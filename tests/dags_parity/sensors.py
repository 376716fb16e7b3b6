"""DAGs of tests/parity/test_sensors.py, served by ONE worker on queue `parity_solo`.

- `parity_sensor`: two sensors, `sensor_a` and `sensor_b`, each raising
  `Reschedule(1 s)` on its first two pokes and succeeding on the third. With
  one worker, both can be poking at once only if a rescheduled sensor frees
  the worker's slot between its pokes;
- `parity_timeout`: `slow` would sleep 30 s but has execution_timeout=1 s;
  `after` (trigger_rule all_done) runs once `slow` has ended;
- `parity_priority`: four independent tasks, declared in an order that is
  not their priority_weight order, so the one worker shows the dispatch order.
"""

from __future__ import annotations

import time
from datetime import timedelta

import _parity as parity  # beside this file: the DAGs folder is importable
import pendulum

from backfill import DAG, Context, Reschedule

START = pendulum.datetime(2016, 1, 1, tz="UTC")
SOLO = {"queue": "parity_solo"}
POKES = 3
POKE_INTERVAL = 1.0
NATURAL_RUN = 30.0


def sensor(ctx: Context) -> None:
    parity.record("start", ctx)
    if parity.starts_so_far(ctx) < POKES:
        raise Reschedule(POKE_INTERVAL)
    parity.record("end", ctx)


def quick(ctx: Context) -> None:
    parity.timed(ctx, 0.2)


parity_sensor = DAG("parity_sensor", schedule="@daily", start_date=START)
parity_sensor.add_task("sensor_a", sensor, **SOLO)
parity_sensor.add_task("sensor_b", sensor, **SOLO)


def slow(ctx: Context) -> None:
    parity.record("start", ctx)
    deadline = time.monotonic() + NATURAL_RUN
    while time.monotonic() < deadline:
        time.sleep(0.05)
    parity.record("end", ctx)  # only if it was NOT stopped


parity_timeout = DAG("parity_timeout", schedule="@daily", start_date=START)
_slow = parity_timeout.add_task("slow", slow, execution_timeout=timedelta(seconds=1), **SOLO)
_slow >> parity_timeout.add_task("after", quick, trigger_rule="all_done", **SOLO)


def instant(ctx: Context) -> None:
    parity.timed(ctx, 0.05)


parity_priority = DAG("parity_priority", schedule="@daily", start_date=START)
for _task_id, _weight in (("p1", 1), ("p4", 4), ("p2", 2), ("p3", 3)):
    parity_priority.add_task(_task_id, instant, priority_weight=_weight, **SOLO)
