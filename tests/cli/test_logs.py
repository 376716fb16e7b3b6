"""Per-try logs end to end: real `backfill run` with local Celery workers on the
embedded default, then `backfill logs` reading what the workers stored in the
metadata DB (DESIGN section 6, Logs).

What must hold: a try's stdout, stderr and `logging` records land in its own
log, stamped, and not in the worker's log; each try keeps its own log; the
cap keeps the tail and says what was cut; `--follow` streams a running try
and ends when it ends; a worker killed mid-try leaves what it had flushed;
the report of a failed backfill names the command for each failed try's log; a
mapped task's TI is picked by its map index (`-m`), and without one the command
names them.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.harness import Harness, embedded_harness
from support.waiting import wait_until

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"

TALK_DAG = """
import logging, sys
from datetime import timedelta
import pendulum
from backfill import DAG, Context

dag = DAG("talk", schedule="@daily", start_date=pendulum.datetime(2024, 1, 1, tz="UTC"))


@dag.task
def chatty(ctx: Context) -> None:
    print(f"hello from {ctx.ds}")
    print("to stderr", file=sys.stderr)
    logging.getLogger("talk.chatty").warning("a warning record")


@dag.task(retries=1, retry_delay=timedelta(seconds=0))
def flaky(ctx: Context) -> None:
    print(f"starting try {ctx.try_number}")
    raise ValueError(f"flaky try {ctx.try_number}")


@dag.task
def loud(ctx: Context) -> None:
    for i in range(5000):
        print(f"line {i:05d}")


@dag.task
def numbers(ctx: Context) -> list[int]:
    return [10, 20, 30]


@dag.task
def each(ctx: Context, x: int) -> int:
    print(f"element {x} at map index {ctx.map_index}")
    return x


each.expand(x=numbers())  # a mapped task: one TI per element, picked by -m
"""

LIVE_DAG = """
import os, time
from pathlib import Path
import pendulum
from backfill import DAG, Context

GATE = Path(os.environ["LOG_TEST_GATE"])
dag = DAG("live", schedule="@daily", start_date=pendulum.datetime(2024, 1, 1, tz="UTC"))


@dag.task
def gated(ctx: Context) -> None:
    print("first", flush=True)
    while not GATE.exists():
        time.sleep(0.05)
    print("second")


@dag.task
def doomed(ctx: Context) -> None:
    print("before the kill", flush=True)
    time.sleep(3600)
"""


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    with embedded_harness(tmp_path) as harness:
        (harness.dags / "talk_dag.py").write_text(TALK_DAG)
        (harness.dags / "live_dag.py").write_text(LIVE_DAG)
        harness.env["LOG_TEST_GATE"] = str(tmp_path / "gate")
        harness.env["BACKFILL_LOG_MAX_BYTES"] = "4096"
        yield harness


def logs(h: Harness, *args: str) -> subprocess.CompletedProcess[str]:
    return h.cli("logs", *args, timeout=60)


def ok(h: Harness, *args: str) -> str:
    done = logs(h, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def refused(h: Harness, *args: str) -> str:
    done = logs(h, *args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    return done.stderr


def test_each_try_has_its_own_capped_stamped_log(h: Harness) -> None:
    run = h.cli("run", "talk", "-s", "2024-01-01", "-e", "2024-01-02", "--local-workers", "2")
    assert run.returncode == 1, run.stderr  # flaky fails on both dates
    for day in ("2024-01-01", "2024-01-02"):
        assert f"backfill logs 1 flaky -d {day}T00:00:00+00:00 --try 2" in run.stdout

    chatty = ok(h, "1", "chatty", "-d", "2024-01-02")
    assert chatty.splitlines()[0].startswith(
        "talk/chatty 2024-01-02T00:00:00+00:00 try 1, claimed by worker:"
    )
    assert re.search(STAMP + r" \[stdout\] hello from 2024-01-02\n", chatty)
    assert re.search(STAMP + r" \[stderr\] to stderr\n", chatty)
    assert re.search(STAMP + r" \[WARNING talk.chatty\] a warning record\n", chatty)
    assert "hello from 2024-01-01" not in chatty
    worker_logs = "".join(p.read_text() for p in (h.home / "logs").glob("local*.log"))
    assert "hello from" not in worker_logs  # the try's output went to its own log

    latest = ok(h, "1", "flaky", "-d", "2024-01-01")
    assert "try 2, claimed by worker:" in latest.splitlines()[0]
    assert "ended failed" in latest.splitlines()[0]
    assert "[stdout] starting try 2" in latest
    assert "Traceback (most recent call last)" in latest
    assert "ValueError: flaky try 2" in latest
    assert latest.rstrip().endswith("[try 2 ended failed: ValueError: flaky try 2]")
    first = ok(h, "1", "flaky", "-d", "2024-01-01", "--try", "1")
    assert "ended up_for_retry" in first.splitlines()[0]
    assert "starting try 1" in first
    assert "starting try 2" not in first

    loud = ok(h, "1", "loud", "-d", "2024-01-01")
    assert re.search(r"\[\.\.\. \d+ bytes cut: a try's log keeps its last", loud)
    assert loud.rstrip().endswith("[stdout] line 04999")
    assert "line 00000" not in loud
    as_json = json.loads(ok(h, "1", "loud", "-d", "2024-01-01", "-o", "json"))
    assert as_json["cut_bytes"] > 0
    assert len(as_json["log"].encode()) <= 4096
    assert as_json["log"].endswith("[stdout] line 04999\n")
    assert as_json["cut_bytes"] + len(as_json["log"].encode()) > 5000 * len("line 00000\n")
    assert (as_json["task_id"], as_json["try_number"], as_json["state"]) == ("loud", 1, "success")


def test_bad_requests_are_refused_with_what_to_do(h: Harness) -> None:
    run = h.cli("run", "talk", "-s", "2024-01-01", "-e", "2024-01-02", "--local-workers", "1")
    assert run.returncode == 1, run.stderr
    assert "pass -d with one of these logical dates" in refused(h, "1", "chatty")
    assert "has no task instance of 'nope'" in refused(h, "1", "nope", "-d", "2024-01-01")
    assert "has no try 3: it has had tries 1 to 2" in refused(
        h, "1", "flaky", "-d", "2024-01-01", "--try", "3"
    )
    assert "no backfill with id 99" in refused(h, "99", "chatty")
    assert "is not a date" in refused(h, "1", "chatty", "-d", "yesterday")
    assert "--follow" in refused(h, "1", "chatty", "-d", "2024-01-01", "-f", "-o", "json")

    # A mapped task's TI, by its map index (on the same run: a run costs seconds).
    second = ok(h, "1", "each", "-d", "2024-01-01", "-m", "1")
    assert second.splitlines()[0].startswith("talk/each[1] 2024-01-01T00:00:00+00:00 try 1, ")
    assert "[stdout] element 20 at map index 1" in second
    assert "element 10" not in second
    as_json = json.loads(ok(h, "1", "each", "-d", "2024-01-02", "--map-index", "2", "-o", "json"))
    assert (as_json["task_id"], as_json["map_index"], as_json["state"]) == ("each", 2, "success")
    assert "element 30 at map index 2" in as_json["log"]
    mapped = refused(h, "1", "each", "-d", "2024-01-01")
    assert "talk/each 2024-01-01T00:00:00+00:00 is a mapped task with map indexes 0 to 2" in mapped
    assert "--map-index N" in mapped
    day = ("-d", "2024-01-01")
    assert "has no map index 3: it has map indexes 0 to 2" in refused(
        h, "1", "each", *day, "-m", "3"
    )
    assert "has no map index 0: it has no map index (not mapped)" in refused(
        h, "1", "numbers", *day, "-m", "0"
    )
    # The placeholder, once mapped, is map index 0: there is no -1 any more.
    assert "each 2024-01-01T00:00:00+00:00 has no map index -1: it has map indexes 0 to 2" in (
        refused(h, "1", "each", *day, "-m", "-1")
    )


def _lines(proc: subprocess.Popen[str]) -> queue.Queue[str]:
    """The process's stdout, line by line, read by a thread (so waits can time out)."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _next_with(lines: queue.Queue[str], text: str, timeout: float = 60) -> str:
    seen = []
    while True:
        try:
            line = lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no line with {text!r} within {timeout}s; saw {seen}") from None
        seen.append(line)
        if text in line:
            return line


def _stored(h: Harness, task_id: str, text: str) -> str:
    """Wait until `text` is in the stored log of the task's latest try; that log."""
    found: dict[str, str] = {}

    def stored() -> bool:
        done = logs(h, "1", task_id)
        found["out"] = done.stdout
        return done.returncode == 0 and text in done.stdout

    wait_until(stored, timeout=60, what=f"{text!r} in {task_id}'s log")
    return found["out"]


def test_follow_streams_a_running_try_and_a_killed_worker_keeps_what_it_flushed(
    h: Harness, tmp_path: Path
) -> None:
    run = h.popen("run", "live", "-s", "2024-01-01", "-e", "2024-01-01", "--local-workers", "2")
    doomed = _stored(h, "doomed", "[stdout] before the kill")
    _stored(h, "gated", "[stdout] first")

    follow = h.popen("logs", "1", "gated", "--follow")
    lines = _lines(follow)
    assert "running" in _next_with(lines, "try 1, claimed by")
    _next_with(lines, "[stdout] first")
    assert follow.poll() is None  # still following: the try runs on
    (tmp_path / "gate").touch()
    _next_with(lines, "[stdout] second")
    assert follow.wait(timeout=60) == 0

    claimant = re.search(r"claimed by worker:[^:]+:(\d+)", doomed)
    assert claimant is not None, doomed
    os.kill(int(claimant.group(1)), signal.SIGKILL)  # the pool process running the try
    _, err = run.communicate(timeout=120)  # reaped after the heartbeat timeout: failed
    assert run.returncode == 1, err
    after = ok(h, "1", "doomed")
    assert "[stdout] before the kill" in after
    assert "ended failed" in after.splitlines()[0]
