"""The coordinator's pass time at ~1k and ~10k active TIs, measured in-process.

For each size a backfill of `bench_hourly_idle` (the 5x10 shape of (e), 50
TIs a run) is created by `backfill create --max-active-runs R` over exactly
R hourly dates, so that once its runs have started every one of them is
running: R x 50 TIs in the running runs (20 -> 1k, 200 -> 10k).

Invariants:
- `backfill.engine.coordinator.Coordinator.run_pass` is timed here, in this process,
  with a publisher that drops the messages: no worker consumes, so the TIs
  a pass queues stay queued, and every later pass reads the same snapshot
  and decides nothing new - the steady cost of one pass at that size;
- the first passes (starting the runs, queueing their first layer) run
  until a pass asks for no other at once; then PASSES passes are timed and
  their median reported; the active TIs are counted from the database and
  must be R x 50, or the figure would not be what it says;
- afterwards the backfill is cancelled (`backfill cancel`) and wound down
  by one more pass, so its running runs do not hold the DAG's window for
  the next size; it runs after (e), when no `backfill coordinator` runs.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from backfill.engine.coordinator import Coordinator
from backfill.messages import TaskMessage
from backfill.model.dag import DAG
from backfill.model.discovery import load_dags
from benchmarks import queries
from benchmarks.commands import Stdout
from benchmarks.dags.bench_dags import LAYER_WIDTH, LAYERS, SCALE_START
from benchmarks.phases import BenchError, Stage

DAG_ID = "bench_hourly_idle"
SIZES = {"1k": 20, "10k": 200}  # active TIs -> running runs
PASSES = 20
MAX_SETUP_PASSES = 50


class _Dropped:
    """A publisher whose messages go nowhere: nothing consumes them anyway."""

    def __init__(self) -> None:
        self.messages = 0

    def publish(self, messages: Sequence[tuple[TaskMessage, str]]) -> None:
        self.messages += len(messages)


def measure(stage: Stage) -> dict[str, Any]:
    dag = load_dags(stage.settings.dags_folder).get(DAG_ID)
    results: dict[str, Any] = {}
    start = SCALE_START
    for label, runs in SIZES.items():
        end = start + timedelta(hours=runs - 1)
        results[label] = _one(
            stage, dag, label, runs=runs, start=start.isoformat(), end=end.isoformat()
        )
        start = end + timedelta(hours=1)
    results["ratio_10k_over_1k"] = results["10k"]["median_ms"] / results["1k"]["median_ms"]
    return results


def _one(stage: Stage, dag: DAG, label: str, *, runs: int, start: str, end: str) -> dict[str, Any]:
    argv = ("backfill", "create", DAG_ID, "-s", start, "-e", end, "--max-active-runs", str(runs))
    ran = stage.commands.run(f"passtime-{label}-create", *argv, timeout=300, stdout=Stdout.CAPTURE)
    if ran.exit_code != 0:
        raise BenchError(f"pass time: {ran.describe()}")
    backfill_id = int(ran.stdout.split()[-1])
    publisher = _Dropped()
    coordinator = Coordinator(stage.engine, stage.settings, dag, publisher=publisher)
    try:
        setup = 1
        while coordinator.run_pass(backfill_id).again and setup < MAX_SETUP_PASSES:
            setup += 1
        with stage.engine.connect() as conn:
            active = queries.active_tis(conn, backfill_id)
        if active != runs * LAYERS * LAYER_WIDTH:
            raise BenchError(f"pass time {label}: {active} active TIs, not {runs * 50}")
        took = []
        for _ in range(PASSES):
            began = time.perf_counter()
            coordinator.run_pass(backfill_id)
            took.append((time.perf_counter() - began) * 1000)
        stage.commands.run(
            f"passtime-{label}-cancel", "backfill", "cancel", str(backfill_id), timeout=60
        )
        coordinator.run_pass(backfill_id)  # winds the cancelled backfill down
    finally:
        coordinator.close()
    return {
        "backfill_id": backfill_id,
        "active_tis": active,
        "setup_passes": setup,
        "queued_messages": publisher.messages,
        "median_ms": statistics.median(took),
        "min_ms": min(took),
        "max_ms": max(took),
    }
