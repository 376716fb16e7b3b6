"""Rows where the coordinators are the fault: two at once, one killed around its publish,
and the DAG file changed under a planned backfill."""

from __future__ import annotations

import json
import shutil
import signal
import sys
from datetime import timedelta

import sqlalchemy as sa
from integration.checks import TIView
from support.processes import CliProcess, spawn
from support.waiting import wait_until

from backfill.store.schema import ti_transitions

from . import plays
from .driver import BATCH_LINE
from .evidence import Trial
from .matrix import Row, Stage
from .scene import Scene


def driver(scene: Scene, *args: str) -> CliProcess:
    """A `python -m chaos.driver ARGS` coordinator process, killed with the scene."""
    name = scene.logs / f"driver-{len(scene.coordinators.processes)}"
    out, err = name.with_suffix(".out"), name.with_suffix(".err")
    argv = [sys.executable, "-m", "chaos.driver", *args]
    process = spawn(argv, scene.stack.env(), out, errors=err)
    scene.coordinators.processes.append(CliProcess(("chaos.driver", *args), process, out, err))
    return scene.coordinators.processes[-1]


def two_coordinators(stage: Stage) -> Trial:
    scene = stage.scene()
    scene.start_workers(3)
    backfill_id = scene.create("chaos_strict")
    scene.launch()
    racers = [driver(scene, str(backfill_id), "chaos_strict", "--racing", n) for n in "ab"]
    seconds = scene.await_final(backfill_id, stage.size.deadline)
    queuers = set(plays.moves(scene.engine, backfill_id, "none", "queued"))
    checks = {
        f"both coordinators queued TIs (actors {sorted(queuers)})": len(queuers) == 2,
        "both drove to the end (exit 0)": [r.wait(60) for r in racers] == [0, 0],
    }
    note = "two chaos.driver processes, not exclusive: both plan and dispatch every pass"
    return Trial(scene, backfill_id, seconds, checks, note=note)


def _killed_around_publish(stage: Stage, when: str) -> Trial:
    scene = stage.scene()
    scene.start_workers(3)
    backfill_id = scene.create("chaos_strict")
    scene.launch()
    armed = scene.logs / "armed"
    doomed = driver(scene, str(backfill_id), "chaos_strict", "--kill", when, "--armed", str(armed))
    wait_until(
        lambda: f":{doomed.process.pid}:" in (plays.lease_owner(scene, backfill_id) or ""),
        timeout=60,
        what="the doomed driver to take the lease",
        explain=doomed.tails,
    )
    standby = plays.daemon(scene)  # takes the lease over once it lapses
    scene.wait_done(backfill_id, 0.3)
    armed.touch()  # the doomed driver dies at its next publish
    code = doomed.wait(120)
    lines = [line for line in doomed.output().splitlines() if line.startswith(BATCH_LINE)]
    batch = set(json.loads(lines[0].removeprefix(BATCH_LINE))) if lines else set()
    seconds = scene.await_final(backfill_id, stage.size.deadline)
    delays = _queue_to_claim(scene, batch)
    timeout = scene.stack.queued_timeout
    if when == "before":
        seen = bool(delays) and min(delays) >= timeout
        what = f"the {len(batch)} unpublished TIs re-sent after the queued timeout"
    else:
        seen = bool(delays) and max(delays) < timeout
        what = f"the {len(batch)} published TIs run at once, not re-sent"
    checks = {
        "the coordinator died of SIGKILL": code == -signal.SIGKILL,
        what: seen and len(delays) == len(batch),
        "the standby took over": "driving it" in standby.output(),
    }
    note = (
        "chaos.driver SIGKILLs itself at its first batch past 30% done; "
        "a `backfill coordinator` stands by"
    )
    return Trial(scene, backfill_id, seconds, checks, note=note)


def _queue_to_claim(scene: Scene, ti_ids: set[int]) -> list[float]:
    """Seconds from each TI's first queueing to its first claim (try 1, the journal)."""
    journal = ti_transitions
    stmt = (
        sa.select(journal.c.task_instance_id, journal.c.to_state, sa.func.min(journal.c.at))
        .where(journal.c.task_instance_id.in_(ti_ids), journal.c.try_number == 1)
        .where(journal.c.to_state.in_(["queued", "running"]))
        .group_by(journal.c.task_instance_id, journal.c.to_state)
    )
    with scene.engine.connect() as conn:
        firsts = {(ti, state): at for ti, state, at in conn.execute(stmt)}
    return [
        (firsts[(ti, "running")] - firsts[(ti, "queued")]) / timedelta(seconds=1)
        for ti in ti_ids
        if (ti, "running") in firsts and (ti, "queued") in firsts
    ]


def killed_before_publish(stage: Stage) -> Trial:
    return _killed_around_publish(stage, "before")


def killed_after_publish(stage: Stage) -> Trial:
    return _killed_around_publish(stage, "after")


MISMATCH = "DagFingerprintMismatch"


def _refused_as_changed(ti: TIView) -> bool:
    failed = ti.state == "failed" and (ti.last_error or "").startswith(MISMATCH)
    return failed or ti.state == "upstream_failed"


def dag_changed(stage: Stage) -> Trial:
    scene = stage.scene()
    folder = scene.logs.parent / "dags"
    shutil.copytree(scene.stack.dags, folder, ignore=shutil.ignore_patterns("__pycache__"))
    scene.stack = scene.stack.with_dags(folder)
    backfill_id = scene.create("chaos_strict")  # planned with the DAG as it was
    scene.launch()
    daemon = plays.daemon(scene)
    wait_until(lambda: "driving it" in daemon.output(), timeout=60, what="the coordinator to drive")
    dag_file = folder / "chaos.py"
    old = 'chaos_strict = _dag("chaos_strict", retries=0,'
    dag_file.write_text(dag_file.read_text().replace(old, old.replace("=0", "=1")))
    scene.start_workers(3)  # deployed after the change: they import the new file
    seconds = scene.await_final(backfill_id, stage.size.deadline)
    mismatched = sum(1 for t in plays.tis(scene, backfill_id) if t.state == "failed")
    checks = {
        f"{mismatched} tries refused as planned with another DAG": mismatched >= stage.size.dates,
        "no callable started": scene.stack.ledger.entries("start") == [],
    }
    note = "planned, then chaos_strict's retries changed in the file, then workers started"
    return Trial(scene, backfill_id, seconds, checks, expect=_refused_as_changed, note=note)


ROWS = [
    Row("two-coordinators", "two coordinators on one backfill", two_coordinators),
    Row("coordinator-kill-before", "coordinator SIGKILL before its publish", killed_before_publish),
    Row("coordinator-kill-after", "coordinator SIGKILL after its publish", killed_after_publish),
    Row("dag-changed", "a DAG file changed between plan and claim", dag_changed),
]
