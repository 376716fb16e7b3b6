"""(e) Scale: the hourly 5x10 DAG over 2016, 8,784 runs and 439,200 TIs.

    backfill create bench_hourly_layers -s 2016-01-01T00:00 -e 2016-12-31T23:00
    backfill coordinator        (stopped with SIGTERM after each window)

Invariants:
- `create`'s wall time (launch to exit) and peak RSS are the command's own
  (`benchmarks.commands`), and the backfill it made is checked to hold every
  TI before anything else is measured;
- a window's TI rate counts, from the database, the TIs whose end_date falls
  in [launch + WINDOW[0], launch + WINDOW[1]) of that window's coordinator,
  over the window's length: start-up and the first passes are not in it;
- the early window runs on the backfill as created; the late one after
  `benchmarks.fastforward` left only the last `keep` runs to do - enough that
  the late window cannot run out of work at twice the early rate;
- between windows the coordinator is stopped (SIGTERM; it exits after its
  pass) and the workers finish what was queued (`_drain`), so the
  fast-forward never races a writer;
- database bytes per TI are pg_total_relation_size of the backfill's tables
  over its TIs, after the early window (as created, a few thousand TIs run)
  and again after the fast-forward (a whole year's history).
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from benchmarks import ops, queries
from benchmarks.commands import Ran, Stdout
from benchmarks.dags.bench_dags import LAYER_WIDTH, LAYERS
from benchmarks.fastforward import fast_forward
from benchmarks.figure import MB
from benchmarks.fleet import Shape, workers
from benchmarks.phases import BenchError, Stage

DAG_ID = "bench_hourly_layers"
RANGE = ("2016-01-01T00:00", "2016-12-31T23:00")
EXPECTED_TIS = 8_784 * LAYERS * LAYER_WIDTH
WINDOW = (10.0, 70.0)  # seconds after a coordinator's launch
CREATE_TIMEOUT = 1800.0  # seconds
DRAIN_TIMEOUT = 60.0  # seconds
MIN_KEEP = 300  # runs left to do after the fast-forward, at least


def measure(stage: Stage, shape: Shape) -> dict[str, Any]:
    created = _create(stage)
    backfill_id, tis = created["backfill_id"], created["task_instances"]
    logs = stage.settings.home / "logs"
    with workers(stage.settings, shape, redis_url=stage.redis_url, logs=logs):
        early = _window(stage, backfill_id, "early")
        early["leftover_after_drain"] = _drain(stage, backfill_id)
        early_bytes = _bytes(stage, tis)
        per_run = LAYERS * LAYER_WIDTH
        keep = max(MIN_KEEP, math.ceil(2 * early["ti_per_second"] * WINDOW[1] / per_run))
        at = datetime.now(UTC) - timedelta(minutes=1)
        forwarded = fast_forward(stage.engine, backfill_id, keep=keep, at=at)
        full_bytes = _bytes(stage, tis)
        late = _window(stage, backfill_id, "late")
        late["leftover_after_drain"] = _drain(stage, backfill_id)
    return {
        "workers": shape.describe(),
        "create": created,
        "early": early,
        "bytes_after_early": early_bytes,
        "fast_forward": {"keep_runs": keep, **forwarded},
        "bytes_after_fast_forward": full_bytes,
        "late": late,
        "late_over_early": late["ti_per_second"] / early["ti_per_second"],
        "coordinator_peak_rss_mb": max(early["peak_rss_mb"] or 0, late["peak_rss_mb"] or 0),
        "operator": ops.measure(stage, backfill_id, tis),
    }


def _create(stage: Stage) -> dict[str, Any]:
    argv = ("backfill", "create", DAG_ID, "-s", RANGE[0], "-e", RANGE[1])
    ran = stage.commands.run("scale-create", *argv, timeout=CREATE_TIMEOUT, stdout=Stdout.CAPTURE)
    if ran.exit_code != 0:
        raise BenchError(f"scale: {ran.describe()}")
    backfill_id = int(ran.stdout.split()[-1])
    with stage.engine.connect() as conn:
        tis = sum(queries.ti_states(conn, backfill_id).values())
        runs = sum(queries.run_states(conn, backfill_id).values())
    if tis != EXPECTED_TIS:
        raise BenchError(f"scale: backfill {backfill_id} has {tis} TIs, not {EXPECTED_TIS}")
    return {
        "backfill_id": backfill_id,
        "runs": runs,
        "task_instances": tis,
        **_command(ran),
    }


def _command(ran: Ran) -> dict[str, Any]:
    mb = None if ran.counts is None else ran.counts["max_rss_kib"] * 1024 / MB
    return {"seconds": ran.seconds, "peak_rss_mb": mb, "statements": ran.statements}


def _window(stage: Stage, backfill_id: int, name: str) -> dict[str, Any]:
    """A `backfill coordinator` for WINDOW[1] seconds; TIs ended in the window, from the DB."""
    running = stage.commands.start(f"scale-coordinator-{name}", "backfill", "coordinator")
    time.sleep(WINDOW[1])
    ran = running.stop()
    if ran.exit_code != 0:
        raise BenchError(f"scale: the {name} coordinator: {ran.describe()}")
    launched = datetime.fromtimestamp(running.started_at, UTC)
    begin, end = (launched + timedelta(seconds=s) for s in WINDOW)
    with stage.engine.connect() as conn:
        ended = queries.ended_between(conn, backfill_id, begin, end)
        states = queries.ti_states(conn, backfill_id)
        analyzed = queries.analyzed(conn)
    return {
        "window": f"{begin.isoformat()} .. {end.isoformat()}",
        "ended_in_window": ended,
        "ti_per_second": ended / (WINDOW[1] - WINDOW[0]),
        "ti_states_at_stop": states,
        "tables_last_analyzed_at_stop": analyzed,
        **_command(ran),
    }


def _drain(stage: Stage, backfill_id: int) -> int:
    """Wait (bounded) until the workers ran what was queued; TIs still queued or running."""

    def busy() -> int:
        with stage.engine.connect() as conn:
            states = queries.ti_states(conn, backfill_id)
        return states.get("queued", 0) + states.get("running", 0)

    deadline = time.monotonic() + DRAIN_TIMEOUT
    while (left := busy()) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left  # what is left, the fast-forward ends too; it is reported


def _bytes(stage: Stage, tis: int) -> dict[str, Any]:
    with stage.engine.connect() as conn:
        sizes = queries.relation_bytes(conn)
    return {
        "tables": sizes,
        "per_ti": sum(sizes.values()) / tis,
        "journal_per_ti": sizes["ti_transitions"] / tis,
    }
