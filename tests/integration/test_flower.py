"""Flower tells the truth about every delivery of a real backfill (DESIGN 2 and 6).

A real `celery -A workers flower` on the test's broker (Redis, then RabbitMQ), real workers
sending events (the app turns them on: no `-E` here), a real backfill whose
every message is published three times, and a task that always fails. Then
Flower's `/api/tasks` must show, by each task's readable args
(`dag/task/date try n`): each try that succeeded once as SUCCESS, each try
that failed once as FAILURE with its error, and every other delivery of the
same try as IGNORED (it lost the claim race: a no-op, never a second
SUCCESS). Flower 2 serves its API without authentication only when
FLOWER_UNAUTHENTICATED_API is set.
"""

from __future__ import annotations

import json
import socket
import sys
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from support.processes import Coordinators, WorkerPool, kill_group, spawn, tail
from support.stack import Stack
from support.waiting import wait_until

from backfill.messages import TASK_NAME
from workers.app import make_app

from .checks import (
    COPIES,
    TriplingDispatcher,
    assert_each_try_started_once,
    create_backfill,
    task_instances_of,
)


class Flower:
    def __init__(self, stack: Stack, log: Path) -> None:
        with socket.socket() as probe:  # a free port; Flower binds it a moment later
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.log = log
        args = [sys.executable, "-m", "celery", "-A", "workers", "flower"]
        args += [f"--port={self.port}", "--address=127.0.0.1"]
        self.process = spawn(args, {**stack.env(), "FLOWER_UNAUTHENTICATED_API": "true"}, log)

    def get(self, path: str) -> Any:
        """The JSON at `path`, or None while Flower does not answer."""
        if self.process.poll() is not None:
            pytest.fail(f"flower exited ({self.process.returncode})\n{tail(self.log)}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return json.loads(r.read())
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return None

    def worker_names(self) -> set[str]:
        """Workers Flower knows from their events (not from remote inspection)."""
        answer = self.get("/workers?json=1") or {"data": []}
        return {w["hostname"] for w in answer["data"]}

    def tasks(self) -> list[dict[str, Any]]:
        """Every delivery of a TI try Flower knows, with its state, result and exception."""
        tasks = self.get("/api/tasks?limit=1000") or {}
        return [t for t in tasks.values() if t["name"] == TASK_NAME]


def verdicts(tasks: list[dict[str, Any]]) -> Counter[tuple[str, str]]:
    """How many deliveries of each try (args) Flower shows in each state."""
    return Counter((t["args"], t["state"]) for t in tasks)


@pytest.fixture
def flower(core_stack: Stack, tmp_path: Path) -> Iterator[Flower]:
    instance = Flower(core_stack, tmp_path / "flower.log")
    try:
        yield instance
    finally:
        kill_group(instance.process)
        print(tail(instance.log))  # shown by pytest when the test failed


def test_flower_shows_each_try_once_as_its_outcome_and_duplicates_as_ignored(
    core_stack: Stack,
    flower: Flower,
    engine_of: Callable[[Stack], Engine],
    workers: WorkerPool,
    coordinators: Coordinators,
) -> None:
    pool = workers.start(core_stack, 2)
    # Events flow once Flower has seen the workers come online: only then start.
    names = {f"{w.name}@{socket.gethostname()}" for w in pool}
    wait_until(
        lambda: names <= flower.worker_names(),
        timeout=60,
        what="Flower to see the workers' events",
        explain=lambda: tail(flower.log),
    )
    engine = engine_of(core_stack)
    dag = core_stack.dag("flower_small")
    backfill_id = create_backfill(engine, dag, "2016-01-01", "2016-01-02")
    dispatcher = TriplingDispatcher(make_app(core_stack.settings()))
    try:
        outcome = coordinators.thread(core_stack, dag, backfill_id, publisher=dispatcher).result(90)
    finally:
        dispatcher.close()
    assert outcome.state == "failed", outcome  # `broken` fails on both dates
    tis = task_instances_of(engine, backfill_id)
    assert len(tis) == 2 * len(dag.tasks)
    outcome_of = {
        f"{t.dag_id}/{t.task_id}/{t.logical_date.isoformat()} try {t.try_number}": t.state
        for t in tis
    }
    assert outcome_of["flower_small/broken/2016-01-01T00:00:00+00:00 try 1"] == "failed"
    flower_state = {"success": "SUCCESS", "failed": "FAILURE"}
    expected: Counter[tuple[str, str]] = Counter()
    for args, state in outcome_of.items():
        expected[(args, flower_state[state])] = 1
        expected[(args, "IGNORED")] = COPIES - 1
    wait_until(
        lambda: verdicts(flower.tasks()) == expected,
        timeout=60,
        what="Flower to show each try once as its outcome and its other deliveries as IGNORED",
        explain=lambda: f"Flower shows {sorted(verdicts(flower.tasks()).items())}",
    )
    for task in flower.tasks():
        if task["state"] == "FAILURE":
            assert "TryFailed" in task["exception"], task
            assert "failed: ValueError: broken on 2016-01-0" in task["exception"], task
        elif task["state"] == "SUCCESS":
            assert task["result"] == repr(f"{task['args']}: success"), task
    assert_each_try_started_once(core_stack.ledger, {t.key for t in tis})
