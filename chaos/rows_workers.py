"""Rows where the workers are hit: killed, frozen, poisoned, shut down, their clocks skewed.

Each row drives its backfill with a `backfill coordinator` daemon over real
`celery worker` processes and strikes once the backfill is under way.
"""

from __future__ import annotations

import signal
import time

from support.processes import Worker, group_members
from support.skew import Skew
from support.waiting import wait_until

from . import plays
from .evidence import Trial
from .matrix import Row, Stage
from .scene import Scene

KILLS = (0.2, 0.45, 0.7)  # the share of TIs done at each SIGKILL


def _hit_busy(scene: Scene, backfill_id: int, sig: signal.Signals) -> Worker:
    """Signal (the whole process group of) a worker running a try of the backfill now."""
    worker = wait_until(
        lambda: plays.busy_worker(scene, backfill_id, scene.workers.started),
        timeout=60,
        what="a worker running a try",
        interval=0.02,
    )
    worker.signal(sig)
    return worker


def worker_sigkill(stage: Stage) -> Trial:
    scene = stage.scene()
    backfill_id = plays.launch(scene, "chaos_steady_retry")  # tries last: a kill lands mid-try
    for share in KILLS:
        scene.wait_done(backfill_id, share)
        victim = _hit_busy(scene, backfill_id, signal.SIGKILL)
        victim.process.wait(timeout=30)
        scene.start_workers(1)  # the fleet replaces it
    seconds = scene.await_final(backfill_id, stage.size.deadline)
    reaped = plays.reaped(scene.engine, backfill_id)
    checks = {f"the {len(KILLS)} killed workers' tries reaped, then retried": reaped >= len(KILLS)}
    return Trial(scene, backfill_id, seconds, checks)


def worker_sigstop(stage: Stage) -> Trial:
    scene = stage.scene()
    backfill_id = plays.launch(scene, "chaos_steady_retry")
    scene.wait_done(backfill_id, 0.3)
    frozen = _hit_busy(scene, backfill_id, signal.SIGSTOP)
    pids = set(group_members(frozen.process.pid))  # the main process and its pool
    time.sleep(scene.stack.heartbeat_timeout + 4)  # past the timeout: reaped meanwhile
    frozen.signal(signal.SIGCONT)
    seconds = scene.await_final(backfill_id, stage.size.deadline)
    # Its late writes may come after the end: its tries were retried elsewhere.
    late = wait_until(
        lambda: plays.stale_writes_of(scene, backfill_id, pids),
        timeout=30,
        what="the frozen worker's late writes to be refused",
    )
    checks = {
        "the frozen worker's tries reaped": plays.reaped(scene.engine, backfill_id) >= 1,
        f"{late} late heartbeats or outcomes of the frozen worker refused": late >= 1,
    }
    return Trial(scene, backfill_id, seconds, checks)


def poison_task(stage: Stage) -> Trial:
    scene = stage.scene()
    backfill_id = plays.launch(scene, "chaos_poison")
    seconds = scene.await_final(backfill_id, stage.size.deadline)
    poisoned = (stage.size.dates + 24) // 25  # dates 0, 25, 50, 75 (tests/dags_chaos)
    died = [
        e
        for e in scene.stack.ledger.entries("start")
        if e.task_id == "poison" and e.try_number == 1
    ]
    ends = {e.key for e in scene.stack.ledger.entries("end") if e.task_id == "poison"}
    checks = {
        f"{poisoned} poisoned tries died without an outcome": (
            sum(1 for e in died if e.key not in ends) == poisoned
        ),
        "each poisoned try reaped, then retried": plays.reaped(scene.engine, backfill_id)
        >= poisoned,
    }
    return Trial(scene, backfill_id, seconds, checks)


def warm_shutdown_storm(stage: Stage) -> Trial:
    scene = stage.scene()
    backfill_id = plays.launch(scene, "chaos_steady")  # no retries: a lost outcome fails a TI
    scene.wait_done(backfill_id, 0.3)
    old = list(scene.workers.started)
    for worker in old:  # the main process only: a group kill would kill the pool too
        worker.process.send_signal(signal.SIGTERM)
    codes = [worker.process.wait(timeout=120) for worker in old]
    scene.start_workers(3)
    seconds = scene.await_final(backfill_id, stage.size.deadline)
    checks = {
        "every worker shut down warm (exit 0)": codes == [0] * len(old),
        "nothing reaped: every running try ended": plays.reaped(scene.engine, backfill_id) == 0,
    }
    return Trial(scene, backfill_id, seconds, checks)


NOTE_CLOCK = (
    "the worker's wall clock is moved by an LD_PRELOAD shim (tests/support/skew.c); "
    "libfaketime also fakes the monotonic clock, and Python's timed waits, the "
    "heartbeat's among them, then never return"
)
TWO_HOURS = 2 * 3600.0


def _skewed(scene: Scene, seconds: float) -> tuple[Worker, Skew]:
    skew = Skew.create(scene.logs, seconds)
    [worker] = scene.start_workers(1, env=skew.env())
    return worker, skew


def clock_behind(stage: Stage) -> Trial:
    scene = stage.scene()
    scene.start_workers(2)
    skewed, skew = _skewed(scene, 0.0)
    backfill_id = scene.create("chaos_steady")  # no retries: a live try reaped fails its TI
    scene.launch()
    plays.daemon(scene)
    scene.wait_done(backfill_id, 0.2)
    skew.set(-TWO_HOURS)  # the wall clock jumps back mid-run
    seconds = scene.await_final(backfill_id, stage.size.deadline)
    checks = {"the worker 2 h behind ran tries": plays.ran_on(scene, skewed) > 0}
    note = f"stepped back 2 h at 20% done: {NOTE_CLOCK}"
    return Trial(scene, backfill_id, seconds, checks, note=note)


def clock_ahead_killed(stage: Stage) -> Trial:
    scene = stage.scene()
    scene.start_workers(2)
    skewed, _ = _skewed(scene, TWO_HOURS)
    backfill_id = scene.create("chaos_steady_retry")
    scene.launch()
    plays.daemon(scene)
    wait_until(
        lambda: plays.busy_worker(scene, backfill_id, [skewed]),
        timeout=120,
        what="the worker 2 h ahead to run a try",
        interval=0.02,
    )
    skewed.signal(signal.SIGKILL)
    seconds = scene.await_final(backfill_id, stage.size.deadline)
    checks = {"the killed worker's tries reaped": plays.reaped(scene.engine, backfill_id) >= 1}
    note = f"2 h ahead from its start, then SIGKILL: {NOTE_CLOCK}"
    return Trial(scene, backfill_id, seconds, checks, note=note)


ROWS = [
    Row("worker-sigkill", "worker SIGKILL (3 times, mid-try)", worker_sigkill),
    Row("worker-sigstop", "worker SIGSTOP past the heartbeat timeout, SIGCONT", worker_sigstop),
    Row("poison", "poison task kills its worker process", poison_task),
    Row("warm-shutdown", "warm-shutdown storm (every worker SIGTERMed)", warm_shutdown_storm),
    Row("clock-behind", "worker wall clock jumped 2 h back", clock_behind),
    Row("clock-ahead", "worker wall clock 2 h ahead, SIGKILLed", clock_ahead_killed),
]
