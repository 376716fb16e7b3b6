"""`backfill cancel ID --abort` end to end (DESIGN section 6), on the embedded default
and on RabbitMQ (a vhost of the test's own; the revoke is a broadcast on both).

A real `backfill run` drives a backfill of four long tasks on one real
`backfill worker` with one pool process: one try runs, three are queued in the
broker. `cancel --abort` must fence the running try and have its callable
stopped within two heartbeat intervals, fail it with a cancel error, withdraw
the queued ones and revoke their messages (the worker discards them as
revoked), and leave the backfill cancelled with nothing queued or running.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.harness import Harness, embedded_harness
from support.waiting import wait_until

INTERVAL = 1.0  # BACKFILL_HEARTBEAT_INTERVAL of this test

SLOW_DAG = """
import os, time
from pathlib import Path
import pendulum
from backfill import DAG, Context

OUT = Path(os.environ["ABORT_TEST_OUT"])
dag = DAG("slow", schedule="@daily", start_date=pendulum.datetime(2024, 1, 1, tz="UTC"))


def long(ctx: Context) -> None:
    (OUT / f"{ctx.task_id}.started").write_text(repr(time.time()))
    try:
        while True:
            time.sleep(0.05)
    finally:  # stopped: Interrupted is raised in here
        (OUT / f"{ctx.task_id}.stopped").write_text(repr(time.time()))


for i in range(4):
    dag.add_task(f"t{i}", long)
"""


@pytest.fixture(params=["embedded", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
def h(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    with embedded_harness(tmp_path) as harness:
        if request.param == "rabbitmq":
            harness.env["BACKFILL_BROKER_URL"] = request.getfixturevalue("rabbit").url
        (harness.dags / "slow_dag.py").write_text(SLOW_DAG)
        out = tmp_path / "out"
        out.mkdir()
        harness.env["ABORT_TEST_OUT"] = str(out)
        harness.env["BACKFILL_HEARTBEAT_INTERVAL"] = str(INTERVAL)
        yield harness


def test_abort_stops_the_running_try_revokes_the_queued_and_leaves_nothing_active(
    h: Harness, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    worker_log = h.worker(concurrency=1)
    run = h.popen("run", "slow", "-s", "2024-01-01", "-e", "2024-01-01", "--local-workers", "0")
    wait_until(
        lambda: len(list(out.glob("*.started"))) == 1,
        timeout=60,
        what="one try to start",
    )
    (started,) = out.glob("*.started")
    task_id = started.stem

    cancel = h.cli("cancel", "1", "--abort")
    aborted_at = time.time()
    assert cancel.returncode == 0, cancel.stderr
    assert cancel.stdout.strip() == (
        "backfill 1 cancelled (abort): 3 queued task instances withdrawn and revoked, "
        "1 running try stopped (failed, cancelled)"
    )
    stopped = out / f"{task_id}.stopped"
    wait_until(stopped.exists, timeout=30, what="the aborted try's callable to stop")
    assert float(stopped.read_text()) - aborted_at <= 2 * INTERVAL + 1.0  # 1 s of slack

    _, err = run.communicate(timeout=60)
    assert run.returncode == 1, err  # a cancelled backfill: exit 1 with its report
    # The worker discards the three revoked messages as it receives them.
    wait_until(
        lambda: worker_log.read_text().count("Discarding revoked task") == 3,
        timeout=60,
        what="the worker to discard the three revoked messages",
        explain=lambda: worker_log.read_text()[-3000:],
    )
    assert len(list(out.glob("*.started"))) == 1  # none of the others ever started

    status = json.loads(h.cli("status", "1", "-o", "json").stdout)
    assert status["state"] == "cancelled"
    assert status["runs"]["failed"] == 1
    active = {s: status["task_instances"][s] for s in ("queued", "running")}
    assert active == {"queued": 0, "running": 0}
    tis = {t["task_id"]: t for t in json.loads(h.cli("tasks", "1", "-o", "json").stdout)}
    assert tis[task_id]["state"] == "failed"
    assert sorted(t["state"] for t in tis.values()) == [
        "failed",
        "scheduled",
        "scheduled",
        "scheduled",
    ]
    log = h.cli("logs", "1", task_id)
    assert "Cancelled: backfill 1 was cancelled with --abort by cli:" in log.stdout
    never = next(t for t in tis if t != task_id)
    follow = h.cli("logs", "1", never, "--follow", timeout=60)  # nothing will start: it ends
    assert follow.returncode == 0, follow.stderr
    assert "try 1: not started yet" in follow.stdout
    audit = h.cli("audit", "1")
    assert audit.returncode == 0, audit.stdout
    assert audit.stdout.rstrip().endswith(" transitions checked, 0 violations")
