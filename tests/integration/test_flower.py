"""Flower shows every TI try of a real backfill, by its readable repr (DESIGN 2, issue 3).

A real `celery -A workers flower` on the test's Redis broker, real workers
sending events (the app turns them on: no `-E` here), a real backfill; then
Flower's `/api/tasks` must list every TI's task as SUCCESS with
`dag/task/date try n` as its args. Flower 2 serves its API without
authentication only when FLOWER_UNAUTHENTICATED_API is set.
"""

from __future__ import annotations

import json
import socket
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from support.processes import Coordinators, WorkerPool, kill_group, spawn, tail
from support.stack import Stack
from support.waiting import wait_until

from backfill.messages import TASK_NAME

from .checks import assert_each_try_started_once, create_backfill, task_instances_of


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

    def succeeded(self) -> set[str]:
        """The args (reprs) of every task Flower shows as SUCCESS."""
        tasks = self.get("/api/tasks?limit=1000") or {}
        return {
            t["args"] for t in tasks.values() if t["name"] == TASK_NAME and t["state"] == "SUCCESS"
        }


@pytest.fixture
def flower(pg_stack: Stack, tmp_path: Path) -> Iterator[Flower]:
    instance = Flower(pg_stack, tmp_path / "flower.log")
    try:
        yield instance
    finally:
        kill_group(instance.process)
        print(tail(instance.log))  # shown by pytest when the test failed


def test_flower_shows_every_ti_try_as_success_with_its_readable_repr(
    pg_stack: Stack,
    flower: Flower,
    engine_of: Callable[[Stack], Engine],
    workers: WorkerPool,
    coordinators: Coordinators,
) -> None:
    pool = workers.start(pg_stack, 2)
    # Events flow once Flower has seen the workers come online: only then start.
    names = {f"{w.name}@{socket.gethostname()}" for w in pool}
    wait_until(
        lambda: names <= flower.worker_names(),
        timeout=60,
        what="Flower to see the workers' events",
        explain=lambda: tail(flower.log),
    )
    engine = engine_of(pg_stack)
    dag = pg_stack.dag("flower_small")
    backfill_id = create_backfill(engine, dag, "2016-01-01", "2016-01-02")
    outcome = coordinators.thread(pg_stack, dag, backfill_id).result(90)
    assert outcome.state == "success", outcome
    tis = task_instances_of(engine, backfill_id)
    assert len(tis) == 2 * len(dag.tasks)
    expected = {
        f"{t.dag_id}/{t.task_id}/{t.logical_date.isoformat()} try {t.try_number}" for t in tis
    }
    assert "flower_small/extract/2016-01-01T00:00:00+00:00 try 1" in expected
    wait_until(
        lambda: expected <= flower.succeeded(),
        timeout=30,
        what="Flower to show every TI try as SUCCESS",
        explain=lambda: f"missing: {sorted(expected - flower.succeeded())}",
    )
    assert_each_try_started_once(pg_stack.ledger, {t.key for t in tis})
