"""`backfill run`, `create`, `resume`, `coordinator`, `worker` end to end, and the progress display.

The end-to-end tests run the real console script in a subprocess with a
BACKFILL_HOME of their own and the DAG files below, whose tasks append to the
execution ledger (`support.ledger`) on every execution (no unique
constraint: a double run would show as two lines). Waits are on conditions with deadlines; teardown
kills every process still carrying the test's BACKFILL_HOME.
"""

from __future__ import annotations

import io
import json
import os
import signal
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
from rich.console import Console
from support.fixtures import PrivateBroker
from support.harness import Harness, cmdline, embedded_harness
from support.processes import processes_of
from support.waiting import wait_until

from backfill.cli.meter import Meter, format_duration
from backfill.cli.progress import (
    LineDisplay,
    LiveDisplay,
    describe_ti,
    format_line,
    group_failed,
    print_groups,
)
from backfill.cli.report import print_report
from backfill.client.story import DEPENDS_ON_PAST_HINT, outcome_json
from backfill.engine.coordinator import Outcome, Progress, TIKey
from backfill.model.states import ACTIVE, BackfillState, RunState, TIState
from backfill.store import lease
from backfill.store.db import create_engine_for
from backfill.store.schema import task_instances, ti_transitions

T = TypeVar("T")

LEDGER_DAG = """
import os, time
import pendulum
from support import ledger
from backfill import DAG, Context

SLEEP = float(os.environ.get("BACKFILL_TEST_TASK_SLEEP", "0"))

dag = DAG("ledger", schedule="@daily", start_date=pendulum.datetime(2024, 1, 1, tz="UTC"))


def record(ctx: Context) -> None:
    time.sleep(SLEEP)
    ledger.record("ran", ctx)  # one line per execution, appended as it ends


a, b, c, d = (dag.add_task(t, record, queue=QUEUE) for t in "abcd")
a >> b >> d
a >> c >> d
"""

FAILING_DAG = """
import pendulum
from backfill import DAG, Context

dag = DAG("failing", schedule="@daily", start_date=pendulum.datetime(2024, 1, 1, tz="UTC"))


@dag.task
def ok(ctx: Context) -> None: ...


@dag.task
def boom(ctx: Context) -> None:
    raise ValueError(f"boom on {ctx.ds}")


@dag.task
def after(ctx: Context) -> None: ...


ok >> boom >> after
"""

POOLED_DAG = """
import pendulum
from backfill import DAG, Context

dag = DAG("pooled", schedule="@daily", start_date=pendulum.datetime(2024, 1, 1, tz="UTC"))


@dag.task
def first(ctx: Context) -> None: ...


@dag.task(pool="nope", pool_slots=2)
def needs_pool(ctx: Context) -> None: ...


first >> needs_pool
"""


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    with embedded_harness(tmp_path) as h:
        write_dags(h, queue="default")
        yield h


def write_dags(h: Harness, *, queue: str) -> None:
    (h.dags / "ledger_dag.py").write_text(f"QUEUE = {queue!r}\n{LEDGER_DAG}")
    (h.dags / "failing_dag.py").write_text(FAILING_DAG)
    (h.dags / "pooled_dag.py").write_text(POOLED_DAG)


def every_ti_once(h: Harness, days: list[str]) -> None:
    expected = Counter((t, ds, 1) for t in "abcd" for ds in days)
    assert h.executions() == expected


def all_states(counts: dict[str, int], states: Any) -> dict[str, int]:
    return {s.value: counts.get(s.value, 0) for s in states}


# --- run on the embedded default ------------------------------------------------------------


def test_run_embedded_end_to_end(harness: Harness) -> None:
    broker = harness.home / "broker"
    stale = [broker / "queue" / "1_x.gone@vm.celery.pidbox.msg", broker / "processed" / "2_y.msg"]
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
    done = harness.cli("run", "ledger", "-s", "2024-01-01", "-e", "2024-01-03", "-o", "json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)  # the final JSON and nothing else
    assert result == {
        "id": 1,
        "dag_id": "ledger",
        "state": "success",
        "runs": all_states({"success": 3}, RunState),
        "task_instances": all_states({"success": 12}, TIState),
        "failed": [],
        "deadlock": {},
        "hints": [],
    }
    every_ti_once(harness, ["2024-01-01", "2024-01-02", "2024-01-03"])
    assert "backfill 1 of ledger created: 3 runs and 12 task instances" in done.stderr
    assert "starting 2 local worker(s)" in done.stderr
    assert len(list((harness.home / "logs").glob("local*.log"))) == 2
    assert not any(path.exists() for path in stale)
    assert processes_of(harness.home) == []  # the local workers and their pool children


def test_run_table_output_shows_progress_and_report(harness: Harness) -> None:
    done = harness.cli(
        "run", "ledger", "-s", "2024-01-01", "-e", "2024-01-02", "--local-workers", "1"
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("runs 0/2 done, TIs: ")
    assert any(line.startswith("runs 2/2 done, TIs: success 8") for line in lines)
    assert "backfill 1 of ledger: success" in lines
    assert "task instances: success 8" in lines
    assert "starting 1 local worker(s)" in done.stderr
    every_ti_once(harness, ["2024-01-01", "2024-01-02"])
    assert processes_of(harness.home) == []


def test_a_failing_task_exits_1_with_a_report_by_error(harness: Harness) -> None:
    done = harness.cli("run", "failing", "-s", "2024-01-01", "-e", "2024-01-02")
    assert done.returncode == 1, done.stderr
    out = done.stdout
    assert "backfill 1 of failing: failed" in out
    assert "failed task instances, by error:" in out
    assert (
        "  ValueError: boom on 2024-01-01 (1):\n    failing/boom/2024-01-01T00:00:00+00:00 try 1"
        in out
    )
    assert "  ValueError: boom on 2024-01-02 (1):" in out
    assert "an upstream task failed (no error of its own) (2):" in out
    assert "failing/after/2024-01-02T00:00:00+00:00 (never ran)" in out
    assert processes_of(harness.home) == []


def test_an_unknown_pool_is_refused_before_anything_is_written(harness: Harness) -> None:
    for command in ("run", "create"):
        refused = harness.cli(command, "pooled", "-s", "2024-01-01", "-e", "2024-01-02")
        assert refused.returncode == 2
        assert refused.stderr == (
            "error: pool 'nope' (needed by needs_pool) does not exist; create it first: "
            "backfill pools set nope SLOTS\n"
        )
        assert not harness.home.exists()  # not even the embedded database


def test_a_deadlock_exits_1_naming_the_tis_and_what_to_do(harness: Harness) -> None:
    assert harness.cli("pools", "set", "nope", "1").returncode == 0  # too small for pool_slots=2
    harness.worker()
    args = ["run", "pooled", "-s", "2024-01-01", "-e", "2024-01-02", "--local-workers", "0"]
    done = harness.cli(*args, "-o", "json")
    assert done.returncode == 1, done.stderr
    result = json.loads(done.stdout)
    assert result["state"] == "failed"
    assert result["failed"] == []
    reason = (
        "pool 'nope' has 1 slots, fewer than the task's pool_slots (2); "
        "enlarge it: backfill pools set nope 2"
    )
    assert list(result["deadlock"]) == [reason]
    assert [(t["task_id"], t["logical_date"]) for t in result["deadlock"][reason]] == [
        ("needs_pool", "2024-01-01T00:00:00+00:00"),
        ("needs_pool", "2024-01-02T00:00:00+00:00"),
    ]
    assert result["hints"] == []


def peak_active(database_url: str) -> int:
    """The most TIs queued or running at once, replayed from the journal in commit order.

    On SQLite every write is serialised, so the journal's ids follow the commits.
    """
    engine = create_engine_for(database_url)
    try:
        with engine.connect() as conn:
            moves = conn.execute(
                sa.select(ti_transitions.c.from_state, ti_transitions.c.to_state).order_by(
                    ti_transitions.c.id
                )
            ).all()
    finally:
        engine.dispose()
    active = peak = 0
    for before, after in moves:
        active += (after in ACTIVE) - (before in ACTIVE)
        peak = max(peak, active)
    return peak


def test_mark_success_queues_under_the_limits_and_runs_nothing(harness: Harness) -> None:
    assert harness.cli("pools", "set", "one", "1").returncode == 0
    worker_log = harness.worker()
    args = ["run", "ledger", "-s", "2024-01-01", "-e", "2024-01-02", "--mark-success"]
    done = harness.cli(*args, "--pool", "one", "--local-workers", "0", "-o", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["task_instances"]["success"] == 8
    assert harness.executions() == Counter()  # no callable ran
    tasks = harness.cli("tasks", "1", "-o", "json")
    assert {(t["state"], t["try_number"]) for t in json.loads(tasks.stdout)} == {("success", 1)}
    database_url = harness.settings().database_url
    engine = create_engine_for(database_url)
    try:
        with engine.connect() as conn:
            pools_used = set(conn.execute(sa.select(task_instances.c.pool)).scalars())
    finally:
        engine.dispose()
    assert pools_used == {"one"}  # --pool: every TI in the override pool
    # Two runs start at once with `a` ready in both, and b, c after each `a`:
    # without the 1-slot pool several TIs would be queued together.
    assert peak_active(database_url) == 1
    logs = worker_log.read_text()
    assert logs.count("--mark-success: marked success without running the task") == 8


def test_rerun_failed_tasks_reruns_only_the_failed_tis(harness: Harness) -> None:
    harness.worker()
    first = harness.cli(
        "run", "failing", "-s", "2024-01-01", "-e", "2024-01-01", "--local-workers=0"
    )
    assert first.returncode == 1, first.stderr
    dry = harness.cli(
        "run", "failing", "-s", "2024-01-01", "-e", "2024-01-01", "--rerun-failed-tasks",
        "--dry-run", "-o", "json",
    )  # fmt: skip
    [planned] = json.loads(dry.stdout)["runs"]
    assert (planned["action"], planned["reason"], planned["task_ids"]) == (
        "reprocess", "--rerun-failed-tasks: 2 failed TIs", ["boom", "after"],
    )  # fmt: skip
    again = harness.cli(
        "run", "failing", "-s", "2024-01-01", "-e", "2024-01-01", "--rerun-failed-tasks",
        "--local-workers=0",
    )  # fmt: skip
    assert again.returncode == 1, again.stderr
    assert (
        "ValueError: boom on 2024-01-01 (1):\n    failing/boom/2024-01-01T00:00:00+00:00 try 2"
        in (again.stdout)
    )
    tasks = json.loads(harness.cli("tasks", "2", "-o", "json").stdout)
    assert {t["task_id"]: (t["state"], t["try_number"]) for t in tasks} == {
        "ok": ("success", 1),  # succeeded: never rerun
        "boom": ("failed", 2),  # its second try
        "after": ("upstream_failed", 0),
    }


# --- on PostgreSQL + each broker----------------------------------------------------------------


def test_run_on_postgres_and_each_broker(
    harness: Harness, pg_url: str, any_broker: PrivateBroker
) -> None:
    queue = f"q_{uuid.uuid4().hex[:8]}"  # nobody else's worker can take these messages
    write_dags(harness, queue=queue)
    harness.env |= {"BACKFILL_DATABASE_URL": pg_url, "BACKFILL_BROKER_URL": any_broker.url}
    args = ["run", "ledger", "-s", "2024-01-01", "-e", "2024-01-03", "--local-workers", "2"]
    done = harness.cli(*args, "-o", "json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["state"] == "success"
    assert result["task_instances"]["success"] == 12
    every_ti_once(harness, ["2024-01-01", "2024-01-02", "2024-01-03"])
    assert f"for queue(s) {queue}" in done.stderr
    assert not (harness.home / "backfill.db").exists()
    assert processes_of(harness.home) == []
    # The broker's password (RabbitMQ's guest) is in no output and no worker's log.
    password = urlsplit(any_broker.url).password
    if password:
        logs = "".join(p.read_text() for p in (harness.home / "logs").glob("*.log"))
        assert not [out for out in (done.stdout, done.stderr, logs) if f":{password}@" in out]


# --- Ctrl-C and resume -----------------------------------------------------------------------


def test_ctrl_c_keeps_state_and_resume_finishes_without_rerunning(harness: Harness) -> None:
    harness.env["BACKFILL_TEST_TASK_SLEEP"] = "0.4"
    days = ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"]
    run = harness.popen("run", "ledger", "-s", days[0], "-e", days[-1], "--max-active-runs", "2")
    wait_until(lambda: sum(harness.executions().values()) >= 2, timeout=120, what="2 TIs ran")
    assert len(processes_of(harness.home)) >= 5  # run + 2 workers and their pool children
    run.send_signal(signal.SIGINT)
    out, err = run.communicate(timeout=120)
    assert run.returncode == 130, err
    assert "backfill 1 is resumable: backfill resume 1" in err
    assert "backfill 1 of ledger: running" in out
    assert processes_of(harness.home) == []
    halted = harness.summary(1)
    assert halted.state is BackfillState.RUNNING
    ran = harness.executions()
    assert all(n == 1 for n in ran.values())
    # Warm shutdown: every try that started was recorded, none is left running.
    assert halted.task_instances.get("running", 0) == 0
    assert halted.task_instances.get("success", 0) == sum(ran.values()) < 16

    resumed = harness.cli("resume", "1", "-o", "json")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["task_instances"]["success"] == 16
    every_ti_once(harness, days)
    assert processes_of(harness.home) == []


def test_a_run_whose_local_workers_all_died_stops_and_says_so(harness: Harness) -> None:
    harness.env["BACKFILL_TEST_TASK_SLEEP"] = "0.5"
    run = harness.popen(
        "run", "ledger", "-s", "2024-01-01", "-e", "2024-01-03", "--local-workers=1"
    )
    wait_until(harness.executions, timeout=120, what="a TI ran")
    workers = [pid for pid in processes_of(harness.home) if b"celery" in cmdline(pid)]
    assert workers
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    _, err = run.communicate(timeout=120)
    assert run.returncode == 1, err
    assert "warning: local worker local0-" in err
    assert "error: every local worker has exited; see their logs in " in err
    assert "backfill 1 is resumable: backfill resume 1" in err
    assert harness.summary(1).state is BackfillState.RUNNING


def test_without_workers_the_run_says_it_waits(harness: Harness) -> None:
    run = harness.popen(
        "run", "ledger", "-s", "2024-01-01", "-e", "2024-01-01", "--local-workers", "0"
    )
    assert run.stderr is not None
    seen = [run.stderr.readline(), run.stderr.readline()]
    assert "no local workers: task instances go to queue(s) default" in seen[1]
    assert "this backfill waits (start one: backfill worker -Q default)" in seen[1]
    wait_until(lambda: harness.summary(1).task_instances.get("queued"), timeout=60, what="queued")
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=60)
    assert run.returncode == 130
    assert "backfill resume 1" in err
    assert harness.executions() == Counter()


def test_resume_unpauses_and_waits_for_a_dead_drivers_lease(harness: Harness) -> None:
    created = harness.cli("create", "ledger", "-s", "2024-01-01", "-e", "2024-01-02", "-o", "json")
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout) == {"id": 1}
    paused = harness.cli("pause", "1")
    assert paused.returncode == 0, paused.stderr
    harness.worker()  # started first: a slow start must not outlast the ghost's lease
    engine = create_engine_for(harness.settings().database_url)
    try:  # a driver that died holding the lease, which lapses in 5 s
        with engine.begin() as conn:
            now = datetime.now(UTC)
            ttl = timedelta(seconds=5)
            assert lease.acquire_lease(conn, 1, owner="ghost:1", now=now, ttl=ttl) is not None
    finally:
        engine.dispose()
    resumed = harness.cli("resume", "1", "--local-workers", "0")
    assert resumed.returncode == 0, resumed.stderr
    assert "backfill 1 un-paused" in resumed.stderr
    assert "waiting for coordinator ghost:1's lease to lapse (until " in resumed.stderr
    assert "backfill 1 of ledger: success" in resumed.stdout
    every_ti_once(harness, ["2024-01-01", "2024-01-02"])


def test_resume_refuses_unknown_and_finished_backfills(harness: Harness) -> None:
    unknown = harness.cli("resume", "7")
    assert unknown.returncode == 2
    assert unknown.stderr == "error: no backfill with id 7; see `backfill list`\n"
    assert not harness.home.exists()
    assert harness.cli("create", "ledger", "-s", "2024-01-01", "-e", "2024-01-01").returncode == 0
    assert harness.cli("cancel", "1").returncode == 0
    finished = harness.cli("resume", "1")
    assert finished.returncode == 2
    assert "backfill 1 has already ended (cancelled); nothing to resume" in finished.stderr
    assert harness.summary(1).state is BackfillState.CANCELLED


# --- create + coordinator ---------------------------------------------------------------------


def test_create_then_coordinator_once_finishes_it(harness: Harness) -> None:
    planned = harness.cli("create", "ledger", "-s", "2024-01-01", "-e", "2024-01-02", "--dry-run")
    assert planned.returncode == 0
    assert "nothing written" in planned.stdout
    assert not harness.home.exists()
    created = harness.cli("create", "ledger", "-s", "2024-01-01", "-e", "2024-01-02")
    assert created.returncode == 0, created.stderr
    assert created.stdout == "1\n"
    assert "a `backfill coordinator` drives it" in created.stderr
    assert harness.executions() == Counter()
    harness.worker()
    once = harness.cli("coordinator", "--once")
    assert once.returncode == 0, once.stderr
    assert "backfill 1 (ledger): driving it" in once.stderr
    assert "backfill 1 (ledger): success" in once.stderr
    every_ti_once(harness, ["2024-01-01", "2024-01-02"])


def test_coordinator_once_exits_1_when_it_cannot_drive_a_backfill(harness: Harness) -> None:
    assert harness.cli("create", "ledger", "-s", "2024-01-01", "-e", "2024-01-01").returncode == 0
    (harness.dags / "ledger_dag.py").unlink()
    once = harness.cli("coordinator", "--once")
    assert once.returncode == 1
    assert "backfill 1 (ledger): DAG 'ledger' not found" in once.stderr
    assert harness.summary(1).state is BackfillState.RUNNING


def test_coordinator_once_winds_a_cancelled_backfill_down(harness: Harness) -> None:
    assert harness.cli("create", "ledger", "-s", "2024-01-01", "-e", "2024-01-02").returncode == 0
    assert harness.cli("cancel", "1").returncode == 0
    assert harness.summary(1).runs != {"failed": 2}  # its runs wait for a driver to end them
    once = harness.cli("coordinator", "--once")
    assert once.returncode == 0, once.stderr
    assert "backfill 1 (ledger): driving it" in once.stderr
    summary = harness.summary(1)
    assert (summary.state, summary.runs) == (BackfillState.CANCELLED, {"failed": 2})
    assert harness.executions() == Counter()


def test_a_coordinator_service_drives_what_is_created_and_stops_on_ctrl_c(
    harness: Harness,
) -> None:
    harness.worker()
    service = harness.popen("coordinator")
    created = harness.cli("create", "ledger", "-s", "2024-01-01", "-e", "2024-01-03")
    assert created.returncode == 0, created.stderr
    wait_until(
        lambda: harness.summary(1).state is BackfillState.SUCCESS,
        timeout=120,
        what="the coordinator finished backfill 1",
    )
    service.send_signal(signal.SIGINT)
    _, err = service.communicate(timeout=60)
    assert service.returncode == 130, err
    assert "backfill 1 (ledger): success" in err
    every_ti_once(harness, ["2024-01-01", "2024-01-02", "2024-01-03"])


def test_worker_hands_its_options_to_celery(harness: Harness) -> None:
    shown = harness.cli("worker", "--help", timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "--concurrency" in shown.stdout  # celery worker's own help
    harness.env["BACKFILL_HEARTBEAT_INTERVAL"] = "often"
    bad = harness.cli("worker", "-l", "INFO", timeout=60)
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: BACKFILL_HEARTBEAT_INTERVAL must be a number")


# --- the progress display and report (pure) ---------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_meter_rate_and_eta_over_a_sliding_window() -> None:
    clock = FakeClock()
    meter = Meter(clock=clock, window=10.0)
    first = meter.tally({"running": 2}, {"none": 10, "queued": 2})
    assert (first.rate, first.eta, first.runs_done, first.runs_total) == (None, None, 0, 2)
    clock.now += 2
    second = meter.tally({"success": 1, "running": 1}, {"success": 4, "none": 8})
    assert second.rate == 2.0
    assert second.eta == 4.0
    assert second.runs_done == 1
    assert list(second.task_instances) == ["none", "success"]  # lifecycle order, no zeros
    clock.now += 20  # the old samples leave the window: the rate is recent
    third = meter.tally({"success": 2}, {"success": 6, "none": 6})
    assert third.rate == pytest.approx(2 / 20)
    last = meter.tally({"success": 2}, {"success": 12})
    assert last.eta == 0.0


def test_line_display_throttles_but_prints_every_finished_run() -> None:
    clock = FakeClock()
    lines: list[str] = []
    display = LineDisplay(lines.append, interval=5.0, clock=clock)
    display.update({"running": 2}, {"none": 4})
    display.update({"running": 2}, {"none": 3, "running": 1})  # too soon: not printed
    clock.now += 1
    display.update({"success": 1, "running": 1}, {"success": 2, "none": 2})  # a run finished
    clock.now += 5
    display.update({"success": 1, "running": 1}, {"success": 3, "none": 1})  # interval passed
    display.update({"success": 1, "running": 1}, {"success": 3, "running": 1})
    display.close()  # the last state is always shown
    assert lines == [
        "runs 0/2 done, TIs: none 4",
        "runs 1/2 done, TIs: none 2, success 2; 2.0 TI/s, ETA 1s",
        "runs 1/2 done, TIs: none 1, success 3; 0.5 TI/s, ETA 2s",
        "runs 1/2 done, TIs: running 1, success 3; 0.5 TI/s, ETA 2s",
    ]


def test_format_line_with_waiting_reasons_and_durations() -> None:
    clock = FakeClock()
    tally = Meter(clock=clock).tally({"running": 1}, {"none": 2}, {"pool 'db' is full": 2})
    assert format_line(tally) == "runs 0/1 done, TIs: none 2; held back: pool 'db' is full (2)"
    assert [format_duration(s) for s in (0.4, 59, 64, 3599, 7500)] == [
        "0s",
        "59s",
        "1m04s",
        "59m59s",
        "2h05m",
    ]


def test_live_display_renders_runs_tis_rate_and_eta() -> None:
    clock = FakeClock()
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120, color_system=None)
    warned: list[str] = []
    display = LiveDisplay(console, title="backfill 3 of ledger", clock=clock, warn=warned.append)
    display.update({"running": 10}, {"none": 40})
    clock.now += 4
    display.update({"success": 3, "running": 7}, {"success": 12, "none": 28}, {"pool full": 3})
    display.notice("database unreachable since 12:03:01, retrying")
    display.close()
    text = out.getvalue()
    assert "backfill 3 of ledger · 4s" in text
    assert "3/10 done" in text
    assert "none 28, success 12" in text
    assert "3.0 TI/s, ETA 9s" in text
    assert "3 TIs: pool full" in text
    assert "notice database unreachable since 12:03:01, retrying" in text  # in the panel
    assert warned == ["database unreachable since 12:03:01, retrying"]  # and said once


def key(task: str, day: int, try_number: int) -> TIKey:
    return TIKey(
        dag_id="d",
        task_id=task,
        run_id=f"backfill__{day}",
        logical_date=datetime(2024, 1, day, tzinfo=UTC),
        try_number=try_number,
    )


def test_failed_tis_are_grouped_by_error_and_listed() -> None:
    failed = [
        (key("a", 1, 1), "ValueError: x"),
        (key("b", 1, 0), None),
        (key("a", 2, 2), "ValueError: x"),
        (key("c", 2, 1), "KeyError: 'k'"),
    ]
    groups = group_failed(failed, no_error="upstream")
    assert list(groups) == ["ValueError: x", "KeyError: 'k'", "upstream"]
    assert [k.task_id for k in groups["ValueError: x"]] == ["a", "a"]
    assert describe_ti(key("a", 2, 2)) == "d/a/2024-01-02T00:00:00+00:00 try 2"
    assert describe_ti(key("b", 1, 0)) == "d/b/2024-01-01T00:00:00+00:00 (never ran)"
    out = io.StringIO()
    print_groups(Console(file=out, width=200), "failed:", groups, limit=1)
    assert out.getvalue().splitlines() == [
        "failed:",
        "  ValueError: x (2):",
        "    d/a/2024-01-01T00:00:00+00:00 try 1",
        "    ... and 1 more (see `backfill tasks`)",
        "  KeyError: 'k' (1):",
        "    d/c/2024-01-02T00:00:00+00:00 try 1",
        "  upstream (1):",
        "    d/b/2024-01-01T00:00:00+00:00 (never ran)",
    ]


def test_a_depends_on_past_deadlock_says_once_how_to_cure_it() -> None:
    final = Progress(
        backfill_id=5, state=BackfillState.FAILED, runs={"failed": 2}, task_instances={"none": 3}
    )
    past = "depends_on_past: the previous date of 'a' is outside the range"
    outcome = Outcome(
        state=BackfillState.FAILED,
        deadlock={
            past: (key("a", 1, 0),),
            "depends_on_past: 'a' failed on the previous date": (key("a", 2, 0),),
            "waiting for an upstream task that cannot run": (key("b", 1, 0),),
        },
        failed=(),
        waiting={},
    )
    out = io.StringIO()
    print_report(Console(file=out, width=300), 5, "d", outcome, final)
    lines = out.getvalue().splitlines()
    assert f"  {past} (1):" in lines
    assert [line for line in lines if "--ignore-first-depends-on-past" in line] == [
        f"hint: {DEPENDS_ON_PAST_HINT}"
    ]
    assert lines[-1] == f"hint: {DEPENDS_ON_PAST_HINT}"
    as_json = outcome_json(5, "d", outcome, final)
    assert list(as_json["deadlock"]) == list(outcome.deadlock or {})
    assert as_json["hints"] == [DEPENDS_ON_PAST_HINT]
    assert "--ignore-first-depends-on-past" in DEPENDS_ON_PAST_HINT
    no_past = Outcome(
        state=BackfillState.FAILED, deadlock={"pool 'p' is gone": ()}, failed=(), waiting={}
    )
    assert outcome_json(5, "d", no_past, final)["hints"] == []


def test_the_report_names_failed_deadlocked_and_held_back_tis() -> None:
    final = Progress(
        backfill_id=4,
        state=BackfillState.FAILED,
        runs={"failed": 2},
        task_instances={"success": 3, "failed": 1, "none": 1},
    )
    reason = "pool 'p' does not exist; create it: backfill pools set p SLOTS"
    outcome = Outcome(
        state=BackfillState.FAILED,
        deadlock={reason: (key("x", 2, 0),)},
        failed=((key("a", 1, 1), "ValueError: x"),),
        waiting={},
    )
    out = io.StringIO()
    print_report(Console(file=out, width=200), 4, "d", outcome, final)
    assert out.getvalue().splitlines() == [
        "backfill 4 of d: failed",
        "runs: failed 2",
        "task instances: success 3, failed 1, none 1",
        "failed task instances, by error:",
        "  ValueError: x (1):",
        "    d/a/2024-01-01T00:00:00+00:00 try 1",
        "the log of each failed try:",
        "  backfill logs 4 a -d 2024-01-01T00:00:00+00:00 --try 1",
        "deadlocked: these task instances can never run, by reason:",
        f"  {reason} (1):",
        "    d/x/2024-01-02T00:00:00+00:00 (never ran)",
        "nothing was left to run, so the backfill has failed; fix the cause above, then run these "
        "dates again with --reprocess failed",
    ]
    interrupted = Outcome(
        state=BackfillState.RUNNING,
        deadlock=None,
        failed=(),
        waiting={"pool 'db' is full (1 slots)": (key("y", 3, 0),)},
    )
    out = io.StringIO()
    print_report(Console(file=out, width=200), 4, "d", interrupted, final)
    assert out.getvalue().splitlines()[3:] == [
        "held back at the last pass, by reason:",
        "  pool 'db' is full (1 slots) (1):",
        "    d/y/2024-01-03T00:00:00+00:00 (never ran)",
    ]


def test_status_tells_a_daemon_driven_backfills_story(harness: Harness) -> None:
    """A deadlock and failures decided by a `backfill coordinator` (no foreground run to
    report them): `status` names them by reason, with what to do, as `run` would."""
    assert harness.cli("pools", "set", "nope", "1").returncode == 0  # too small for pool_slots=2
    harness.worker()
    for dag_id in ("pooled", "failing"):
        created = harness.cli("create", dag_id, "-s", "2024-01-01", "-e", "2024-01-02")
        assert created.returncode == 0, created.stderr
    daemon = harness.cli("coordinator", "--once", timeout=120)
    assert daemon.returncode == 0, daemon.stderr

    pooled = json.loads(harness.cli("status", "1", "-o", "json").stdout)
    assert pooled["state"] == "failed"
    reason = (
        "pool 'nope' has 1 slots, fewer than the task's pool_slots (2); "
        "enlarge it: backfill pools set nope 2"
    )
    assert pooled["deadlock"][reason]["count"] == 2
    assert [t["logical_date"] for t in pooled["deadlock"][reason]["tis"]] == [
        "2024-01-01T00:00:00+00:00",
        "2024-01-02T00:00:00+00:00",
    ]
    table = harness.cli("status", "1").stdout
    assert "deadlocked: these task instances can never run, by reason:" in table
    assert f"  {reason} (2):" in table

    failing = json.loads(harness.cli("status", "2", "-o", "json").stdout)
    assert failing["state"] == "failed"
    assert failing["failed_total"] == 4  # boom twice, after twice (upstream failed)
    boom = [f for f in failing["failed"] if f["task_id"] == "boom"]
    assert [f["log_command"] for f in boom] == [
        "backfill logs 2 boom -d 2024-01-01T00:00:00+00:00 --try 1",
        "backfill logs 2 boom -d 2024-01-02T00:00:00+00:00 --try 1",
    ]
    table = harness.cli("status", "2").stdout
    assert "failed task instances, by error:" in table
    assert "  ValueError: boom on 2024-01-01 (1):" in table
    assert "  backfill logs 2 boom -d 2024-01-01T00:00:00+00:00 --try 1" in table


def test_run_with_a_message_key_signs_what_its_workers_require(harness: Harness) -> None:
    """BACKFILL_MESSAGE_KEY on the coordinator and its local workers: every message is
    signed, and every one runs (a worker with the key refuses unsigned messages)."""
    harness.env["BACKFILL_MESSAGE_KEY"] = "fleet-secret"
    done = harness.cli(
        "run", "ledger", "-s", "2024-01-01", "-e", "2024-01-01", "--local-workers", "1"
    )
    assert done.returncode == 0, done.stderr
    every_ti_once(harness, ["2024-01-01"])
    logs = "".join(p.read_text() for p in (harness.home / "logs").glob("local*.log"))
    assert "unsigned or forged" not in logs
    assert "fleet-secret" not in logs + done.stdout + done.stderr
