"""One coordinator, in a process of its own: `python -m benchmarks.driver DAG START END`.

Plans and creates a backfill of DAG over [START, END] (ISO dates), drives it
to its end with `backfill.coordinator.Coordinator`, and prints ONE line of
JSON on stdout: the backfill's id and final state, wall times, the SQL the
process sent (`benchmarks.sqlcount`), the coordinator's passes, and the
process's peak RSS. It runs alone in its process so that `ru_maxrss` is the
coordinator's own, and so that the statements counted are its statements.
Settings come from the BACKFILL_* environment the bench sets.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from dataclasses import asdict
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pendulum

from backfill.config import Settings, redact
from backfill.coordinator import Coordinator, PassResult
from backfill.create import create_backfill
from backfill.db import open_engine
from backfill.discovery import load_dags
from backfill.options import RunOptions
from backfill.plan import expand_range, plan_backfill
from backfill.store import reads
from benchmarks.sqlcount import SQLCounter

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine


class TimedCoordinator(Coordinator):
    """Counts passes and the wall time spent in them (the rest is waiting for wake-ups)."""

    passes = 0
    pass_seconds = 0.0
    dispatched = 0

    def run_pass(self, backfill_id: int, *, now: datetime | None = None) -> PassResult:
        began = time.perf_counter()
        result = super().run_pass(backfill_id, now=now)
        self.pass_seconds += time.perf_counter() - began
        self.passes += 1
        self.dispatched += result.dispatched
        return result


def main(argv: list[str]) -> int:
    dag_id, start, end = argv
    settings = Settings.from_env()
    counter = SQLCounter().install()
    engine = open_engine(settings, create=False)
    if engine is None:
        raise SystemExit(f"no database at {redact(settings.database_url)}")
    try:
        report = run(engine, settings, counter, dag_id, start=_utc(start), end=_utc(end))
    finally:
        engine.dispose()
    report["max_rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps(report), flush=True)
    return 0


def run(
    engine: Engine,
    settings: Settings,
    counter: SQLCounter,
    dag_id: str,
    *,
    start: pendulum.DateTime,
    end: pendulum.DateTime,
) -> dict[str, Any]:
    """Plan, create and drive one backfill; what it took (see the module doc)."""
    dag = load_dags(settings.dags_folder).dags[dag_id]
    intervals = expand_range(dag, start, end)
    before, began = counter.read(), time.perf_counter()
    with reads.reading(engine) as conn:
        existing = reads.existing_runs(conn, dag_id, [i.logical_date for i in intervals])
    plan = plan_backfill(dag, intervals, existing, RunOptions())
    backfill_id = create_backfill(engine, dag, plan, now=pendulum.now("UTC"))
    created, created_at = counter.read(), time.perf_counter()
    coordinator = TimedCoordinator(engine, settings, dag)
    try:
        outcome = coordinator.drive(backfill_id)
    finally:
        coordinator.close()
    ended, ended_at = counter.read(), time.perf_counter()
    return {
        "backfill_id": backfill_id,
        "state": outcome.state.value,
        "task_instances": plan.task_instance_count,
        "create_seconds": created_at - began,
        "total_seconds": ended_at - began,
        "create_sql": asdict(created - before),
        "drive_sql": asdict(ended - created),
        "passes": coordinator.passes,
        "pass_seconds": coordinator.pass_seconds,
        "dispatched": coordinator.dispatched,
    }


def _utc(text: str) -> pendulum.DateTime:
    value = pendulum.parse(text, tz="UTC")
    if not isinstance(value, pendulum.DateTime):
        raise SystemExit(f"not a date-time: {text!r}")
    return value


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
