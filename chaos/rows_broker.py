"""Rows where the broker misbehaves: duplicates, redeliveries, a restart, lost and
forged messages."""

from __future__ import annotations

import dataclasses
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from integration.checks import task_instances_of
from integration.servers import RedisServer
from support.waiting import wait_until

from backfill.engine.dispatch import Dispatcher
from backfill.messages import TASK_NAME, TaskMessage
from backfill.signing import sign
from workers.app import make_app

from . import plays
from .evidence import Trial, refusals
from .matrix import Row, Stage
from .scene import private_server
from .settings import VISIBILITY_TIMEOUT

QUEUE = "default"


class DoublingDispatcher(Dispatcher):
    """The real dispatcher, publishing every message twice (tests/integration/checks.py's
    TriplingDispatcher, at two copies)."""

    def publish(self, messages: Sequence[tuple[TaskMessage, str]]) -> None:
        super().publish([m for m in messages for _ in range(2)])


def published_twice(stage: Stage) -> Trial:
    scene = stage.scene()
    scene.start_workers(3)
    backfill_id = scene.create("chaos_strict")
    dispatcher = DoublingDispatcher(make_app(scene.stack.settings()))
    try:
        dag = scene.stack.dag("chaos_strict")
        scene.launch()
        scene.coordinators.thread(scene.stack, dag, backfill_id, publisher=dispatcher)
        seconds = scene.await_final(backfill_id, stage.size.deadline)
    finally:
        dispatcher.close()
    tis = len(task_instances_of(scene.engine, backfill_id))
    # Every second copy reaches a worker after the first: wait for the last ones.
    refused = wait_until(
        lambda: (n := refusals(scene.engine, backfill_id)["claim"]) >= tis and n,
        timeout=60,
        what="every second copy to be refused at its claim",
    )
    checks = {"every TI's second copy refused at the claim": refused == tis}
    note = "an in-process coordinator thread with a doubling dispatcher"
    return Trial(scene, backfill_id, seconds, checks, note=note)


def visibility_redelivery(stage: Stage) -> Trial:
    scene = stage.scene()
    scene.start_workers(3, app="chaos.visibility")
    backfill_id = scene.create("chaos_long")
    scene.launch()
    plays.daemon(scene)
    seconds = scene.await_final(backfill_id, stage.size.deadline)
    long_tries = stage.size.dates  # t9 of each date outlives the visibility timeout
    refused = refusals(scene.engine, backfill_id)["claim"]
    checks = {f"each of the {long_tries} 4 s tries delivered again, refused": refused >= long_tries}
    note = f"Redis visibility_timeout={VISIBILITY_TIMEOUT}s (chaos/visibility.py); t9 runs 4 s"
    return Trial(scene, backfill_id, seconds, checks, note=note)


def redis_restarted(stage: Stage) -> Trial:
    server = stage.exits.enter_context(private_server(RedisServer))
    scene = stage.scene(broker=server.url)
    backfill_id = plays.launch(scene, "chaos_strict")
    daemon = scene.coordinators.processes[-1]
    scene.wait_done(backfill_id, 0.3)
    process = server._process  # our child: killed, not shut down
    assert process is not None
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    server.stop()  # forgets the dead process
    time.sleep(3.0)  # down for a while; it persisted nothing: every message is lost
    server.start()  # on the same port
    seconds = scene.await_final(backfill_id, stage.size.deadline)
    checks = {
        "the coordinator saw the broker go and come back": (
            "broker reachable again" in daemon.output()
        ),
    }
    return Trial(scene, backfill_id, seconds, checks, note="a private redis-server, SIGKILLed")


def messages_purged(stage: Stage) -> Trial:
    scene = stage.scene()
    backfill_id = plays.launch(scene, "chaos_strict", workers=2, concurrency=2)
    private = scene.stack.redis
    assert private is not None
    purged = 0
    for share in (0.2, 0.5):
        scene.wait_done(backfill_id, share)
        waiting = wait_until(
            lambda: private.queue_length(QUEUE), timeout=30, what="messages waiting in the queue"
        )
        private.purge(QUEUE)
        purged += waiting
    seconds = scene.await_final(backfill_id, stage.size.deadline)
    checks = {f"{purged} waiting messages purged, re-sent": purged > 0 and seconds is not None}
    return Trial(scene, backfill_id, seconds, checks, note="the queue purged twice, mid-run")


class _Tripwire:
    """Unpickling this creates a file: proof that a pickle payload was deserialized."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


FORGED = "unsigned or forged message"
PICKLE = "Refusing to deserialize untrusted content of type pickle"


def forged_messages(stage: Stage) -> Trial:
    scene = stage.scene()
    scene.stack = dataclasses.replace(scene.stack, message_key="chaos-message-key")
    backfill_id = plays.launch(scene, "chaos_steady")
    scene.wait_done(backfill_id, 0.2)
    queued = [t for t in task_instances_of(scene.engine, backfill_id) if t.state == "queued"]
    tripwire = scene.stack.home / "unpickled"
    app = make_app(scene.stack.settings())
    try:
        for ti in queued:  # the very try each TI waits for: claimable, were it not forged
            body = _kwargs(ti, backfill_id)
            app.send_task(TASK_NAME, queue=QUEUE, kwargs=body)  # unsigned
            app.send_task(TASK_NAME, queue=QUEUE, kwargs=sign(body, "another key"))
            app.send_task(
                TASK_NAME,
                queue=QUEUE,
                kwargs={**body, "x": _Tripwire(tripwire)},
                serializer="pickle",
            )
    finally:
        app.close()
    seconds = scene.await_final(backfill_id, stage.size.deadline)
    workers = scene.workers.started
    wait_until(
        lambda: sum(w.count(FORGED) for w in workers) >= 2 * len(queued),
        timeout=60,
        what="every forged message to be refused",
    )
    forged = sum(w.count(FORGED) for w in workers)
    pickled = sum(w.count(PICKLE) for w in workers)
    checks = {
        f"{2 * len(queued)} forged JSON messages refused": forged == 2 * len(queued) > 0,
        f"{len(queued)} pickle messages refused, never unpickled": (
            pickled >= len(queued) and not tripwire.exists()
        ),
    }
    note = "BACKFILL_MESSAGE_KEY set; forged for TIs queued at that moment"
    return Trial(scene, backfill_id, seconds, checks, redelivered=forged + pickled, note=note)


def _kwargs(ti: Any, backfill_id: int) -> dict[str, Any]:
    return TaskMessage(
        ti_id=ti.id,
        try_number=ti.try_number,
        backfill_id=backfill_id,
        dag_id=ti.dag_id,
        task_id=ti.task_id,
        logical_date=ti.logical_date.isoformat(),
    ).kwargs()


ROWS = [
    Row("published-twice", "every message published twice", published_twice),
    Row("visibility", "broker visibility-timeout redelivery", visibility_redelivery),
    Row("redis-restart", "Redis killed and restarted", redis_restarted),
    Row("purged", "messages deleted from the broker (queue purged)", messages_purged),
    Row("forged", "pickle and forged messages", forged_messages),
]
