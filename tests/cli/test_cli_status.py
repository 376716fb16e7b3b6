"""`backfill status / list / tasks / pause / cancel` through the CLI, on both backends.

Backfills are seeded with the store's insert functions and moved along with
plain Core updates, so every count and order below is known in advance.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pendulum
import pytest
import sqlalchemy as sa
from click.testing import Result
from sqlalchemy.engine import Connection, Engine
from support.cli import assert_user_error, invoke
from support.states import force_state

from backfill.model.states import BackfillState, RunState, TIState
from backfill.store import claims, lease, reports, runs
from backfill.store.db import create_engine_for
from backfill.store.runs import NewRun, TaskSpec
from backfill.store.schema import backfills, dag_runs, task_instances, ti_transitions

T0 = datetime(2024, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)
# Not alphabetical: `tasks` must keep creation (topological) order within a date.
TASK_IDS = ["extract", "clean", "aggregate"]
TASKS = [
    TaskSpec(
        task_id=t,
        pool="default_pool",
        pool_slots=1,
        queue="default",
        priority_weight=1,
        max_tries=2,
    )
    for t in TASK_IDS
]
ALL_TI_STATES = [
    "none", "scheduled", "queued", "running", "success", "failed", "skipped", "up_for_retry",
    "up_for_reschedule", "upstream_failed", "removed",
]  # fmt: skip


def iso(moment: datetime) -> str:
    return moment.isoformat()


def as_json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def seed(
    conn: Connection, dag_id: str, days: int, *, created: datetime, state: str = "queued"
) -> int:
    """A backfill of `days` daily runs from T0, runs inserted newest first (so run and TI
    ids do not follow logical dates), three TIs each."""
    backfill_id = runs.insert_backfill(
        conn,
        dag_id=dag_id,
        fingerprint="f" * 64,
        start=T0,
        end=T0 + (days - 1) * DAY,
        options={"reprocess": "none"},
        conf={"source": dag_id},
        now=created,
    )
    new_runs = [
        NewRun(run_id=f"backfill__{T0 + d * DAY:%Y-%m-%d}", logical_date=T0 + d * DAY,
               data_interval_start=T0 + d * DAY, data_interval_end=T0 + (d + 1) * DAY)
        for d in reversed(range(days))
    ]  # fmt: skip
    runs.insert_runs(
        conn,
        backfill_id=backfill_id,
        dag_id=dag_id,
        runs=new_runs,
        tasks=TASKS,
        conf={"source": dag_id},
        now=created,
    )
    force_state(conn, backfills, backfills.c.id == backfill_id, BackfillState(state))
    return backfill_id


def set_run(conn: Connection, backfill_id: int, day: int, state: str) -> None:
    where = sa.and_(
        dag_runs.c.backfill_id == backfill_id, dag_runs.c.logical_date == T0 + day * DAY
    )
    force_state(conn, dag_runs, where, RunState(state))


def set_ti(
    conn: Connection, backfill_id: int, day: int, task_id: str, *, state: str, **values: Any
) -> None:
    run = sa.select(dag_runs.c.id).where(
        dag_runs.c.backfill_id == backfill_id, dag_runs.c.logical_date == T0 + day * DAY
    )
    where = sa.and_(task_instances.c.dag_run_id.in_(run), task_instances.c.task_id == task_id)
    values |= {"updated_at": T0, "updated_by": "test"}
    assert force_state(conn, task_instances, where, TIState(state), **values) == 1


@dataclass(frozen=True)
class Seeded:
    etl: int  # running: day 0 success, day 1 running, day 2 queued
    other: int  # queued, created an hour later, one run
    empty: int  # failed, no runs at all, created two hours later


DONE = {
    "state": "success",
    "try_number": 1,
    "hostname": "w1",
    "start_date": T0 + timedelta(minutes=1),
    "end_date": T0 + timedelta(minutes=2),
}
RUNNING = {
    "state": "running",
    "try_number": 2,
    "hostname": "w2",
    "start_date": T0 + timedelta(minutes=3),
    "last_error": "ValueError: boom",
}


@pytest.fixture
def seeded(engine: Engine) -> Seeded:
    with engine.begin() as conn:
        etl = seed(conn, "etl", 3, created=T0, state="running")
        set_run(conn, etl, 0, "success")
        for task_id in TASK_IDS:
            set_ti(conn, etl, 0, task_id, **DONE)
        set_run(conn, etl, 1, "running")
        set_ti(conn, etl, 1, "extract", **DONE)
        set_ti(conn, etl, 1, "clean", **RUNNING)
        other = seed(conn, "other", 1, created=T0 + timedelta(hours=1))
        empty = runs.insert_backfill(
            conn, dag_id="empty", fingerprint="e" * 64, start=T0, end=T0, options={}, conf={},
            now=T0 + timedelta(hours=2),
        )  # fmt: skip
        force_state(conn, backfills, backfills.c.id == empty, BackfillState.FAILED)
    return Seeded(etl=etl, other=other, empty=empty)


# --- status ---------------------------------------------------------------------------


def test_status_json_shape(home: Path, db_url: str, seeded: Seeded) -> None:
    data = as_json(invoke(home, "status", str(seeded.etl), "-o", "json", db_url=db_url))
    tis = dict.fromkeys(ALL_TI_STATES, 0) | {"success": 4, "running": 1, "none": 4}
    assert data == {
        "id": seeded.etl,
        "dag_id": "etl",
        "state": "running",
        "start": "2024-01-01T00:00:00+00:00",
        "end": "2024-01-03T00:00:00+00:00",
        "created_at": "2024-01-01T00:00:00+00:00",
        "updated_at": "2024-01-01T00:00:00+00:00",
        "runs": {"queued": 1, "running": 1, "success": 1, "failed": 0},
        "task_instances": tis,
        "progress": {"runs_finished": 1, "runs_total": 3},
        "options": {"reprocess": "none"},
        "conf": {"source": "etl"},
        # The story: no driver has reported yet, nothing failed.
        "failed": [],
        "failed_total": 0,
        "deadlock": {},
        "hints": [],
        "waiting": {},
        "rate_per_minute": None,
        "eta_seconds": None,
        "report_at": None,
        "driver": None,
        "broker_down_since": None,
    }


def test_status_without_id_is_the_newest_backfill(home: Path, db_url: str, seeded: Seeded) -> None:
    data = as_json(invoke(home, "status", "--output", "json", db_url=db_url))
    assert (data["id"], data["dag_id"], data["state"]) == (seeded.empty, "empty", "failed")
    assert data["runs"] == {"queued": 0, "running": 0, "success": 0, "failed": 0}
    assert data["progress"] == {"runs_finished": 0, "runs_total": 0}


def test_status_table(home: Path, db_url: str, seeded: Seeded) -> None:
    result = invoke(home, "status", str(seeded.etl), db_url=db_url)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"Backfill {seeded.etl}: etl" in out
    assert "1/3 runs finished (33%)" in out
    assert "queued 1, running 1, success 1" in out
    assert "none 4, running 1, success 4" in out
    assert "2024-01-01 00:00:00+00:00 .. 2024-01-03 00:00:00+00:00" in out
    assert "\x1b" not in out


def test_status_of_a_running_backfill_shows_its_drivers_waiting_reasons_and_pace(
    home: Path, db_url: str, engine: Engine, seeded: Seeded
) -> None:
    """What the driver's last pass reported (`planning.story`, kept by `store.reports`):
    why TIs wait, and the rate and ETA from its samples."""
    at = datetime(2024, 1, 1, tzinfo=UTC)
    held = {"dag_id": "etl", "task_id": "load", "run_id": "r", "try_number": 0}
    report = {
        "at": (at + timedelta(seconds=60)).isoformat(),
        "waiting": {
            "pool 'db' is full (4/4 slots)": {
                "count": 3,
                "tis": [{**held, "logical_date": "2024-01-03T00:00:00+00:00"}],
            }
        },
        "deadlock": None,
        "samples": [[at.isoformat(), 0], [(at + timedelta(seconds=60)).isoformat(), 4]],
        "broker_down_since": "2024-01-01T00:00:30+00:00",
    }
    with engine.begin() as conn:
        reports.write(conn, seeded.etl, report)
        lease.acquire_lease(
            conn,
            seeded.etl,
            owner="host-a:42:c0ffee",
            now=pendulum.now("UTC"),
            ttl=timedelta(hours=1),
        )
    data = as_json(invoke(home, "status", str(seeded.etl), "-o", "json", db_url=db_url))
    assert data["waiting"] == {"pool 'db' is full (4/4 slots)": 3}
    assert (data["rate_per_minute"], data["eta_seconds"]) == (4.0, 75.0)  # 5 TIs left
    assert data["deadlock"] == {}  # running: a deadlock is only told once it has failed
    assert data["driver"]["owner"] == "host-a:42:c0ffee"
    assert data["broker_down_since"] == "2024-01-01T00:00:30+00:00"
    out = invoke(home, "status", str(seeded.etl), db_url=db_url).stdout
    assert "4.0 TIs/min over the last minute, ETA 1m15s" in out
    assert "host-a:42:c0ffee (lease until" in out
    assert "unreachable since 2024-01-01T00:00:30+00:00; the driver retries" in out
    assert "held back at the driver's last pass, by reason:" in out
    listed = as_json(invoke(home, "list", "-o", "json", db_url=db_url))
    etl = next(row for row in listed if row["id"] == seeded.etl)
    assert (etl["rate_per_minute"], etl["eta_seconds"]) == (4.0, 75.0)  # as status tells it
    assert "  pool 'db' is full (4/4 slots) (3):" in out
    assert "    etl/load/2024-01-03T00:00:00+00:00 (never ran)" in out
    assert "    ... and 2 more (see `backfill tasks`)" in out


def test_status_unknown_id(home: Path, db_url: str, seeded: Seeded) -> None:
    assert_user_error(
        invoke(home, "status", "999", db_url=db_url),
        "no backfill with id 999; see `backfill list`",
    )


@pytest.mark.parametrize("bad", ["abc", "0", "-3", "99999999999999999999"])
def test_status_bad_id_is_a_usage_error(home: Path, db_url: str, bad: str) -> None:
    assert_user_error(invoke(home, "status", "--", bad, db_url=db_url), "ID")


def test_status_of_an_empty_database(home: Path, db_url: str) -> None:
    assert_user_error(invoke(home, "status", db_url=db_url), "no backfills yet")
    assert_user_error(invoke(home, "status", "1", db_url=db_url), "no backfill with id 1")


def test_reads_never_create_the_embedded_database(home: Path) -> None:
    assert_user_error(invoke(home, "status"), "no backfills yet")
    assert_user_error(invoke(home, "status", "4"), "no backfill with id 4")
    assert_user_error(invoke(home, "tasks", "4"), "no backfill with id 4")
    assert as_json(invoke(home, "list", "-o", "json")) == []
    assert invoke(home, "list").stdout.strip() == "no backfills yet"
    assert_user_error(invoke(home, "pause", "4"), "no backfill with id 4")
    assert_user_error(invoke(home, "cancel", "4"), "no backfill with id 4")
    assert not home.exists()


def test_a_database_without_schema_is_named(home: Path, backend: str, empty_db_url: str) -> None:
    if backend == "sqlite":  # a missing embedded database: nothing yet, and still nothing
        assert_user_error(invoke(home, "status", db_url=empty_db_url), "no backfills yet")
        assert not Path(sa.make_url(empty_db_url).database or "").exists()
        return
    for args in (["status"], ["list"], ["tasks", "1"], ["cancel", "1"]):
        assert_user_error(
            invoke(home, *args, db_url=empty_db_url),
            "has no Backfill schema; run `backfill db migrate`",
        )


# --- list -----------------------------------------------------------------------------


def test_list_json_newest_first_with_totals(home: Path, db_url: str, seeded: Seeded) -> None:
    data = as_json(invoke(home, "list", "-o", "json", db_url=db_url))
    assert data == [
        {
            "id": seeded.empty, "dag_id": "empty", "state": "failed",
            "start": iso(T0), "end": iso(T0),
            "created_at": iso(T0 + timedelta(hours=2)), "updated_at": iso(T0 + timedelta(hours=2)),
            "runs_total": 0, "runs_finished": 0,
            "task_instances_total": 0, "task_instances_finished": 0,
            "rate_per_minute": None, "eta_seconds": None,  # no driver's report yet
        },
        {
            "id": seeded.other, "dag_id": "other", "state": "queued",
            "start": iso(T0), "end": iso(T0),
            "created_at": iso(T0 + timedelta(hours=1)), "updated_at": iso(T0 + timedelta(hours=1)),
            "runs_total": 1, "runs_finished": 0,
            "task_instances_total": 3, "task_instances_finished": 0,
            "rate_per_minute": None, "eta_seconds": None,  # no driver's report yet
        },
        {
            "id": seeded.etl, "dag_id": "etl", "state": "running",
            "start": iso(T0), "end": iso(T0 + 2 * DAY),
            "created_at": iso(T0), "updated_at": iso(T0),
            "runs_total": 3, "runs_finished": 1,
            "task_instances_total": 9, "task_instances_finished": 4,
            "rate_per_minute": None, "eta_seconds": None,  # no driver's report yet
        },
    ]  # fmt: skip


def test_list_state_filter(home: Path, db_url: str, seeded: Seeded) -> None:
    def ids(*args: str) -> list[int]:
        return [row["id"] for row in as_json(invoke(home, "list", "-o", "json", *args,
                                                     db_url=db_url))]  # fmt: skip

    assert ids("--state", "running") == [seeded.etl]
    assert ids("--state", "queued") == [seeded.other]
    assert ids("--state", "cancelled") == []
    assert_user_error(
        invoke(home, "list", "--state", "done", db_url=db_url), "'done' is not one of", "'paused'"
    )


def test_list_table(home: Path, db_url: str, seeded: Seeded) -> None:
    result = invoke(home, "list", db_url=db_url)
    assert result.exit_code == 0, result.output
    lines = [ln for ln in result.stdout.splitlines() if " etl " in ln]
    assert len(lines) == 1
    for cell in (str(seeded.etl), "running", "1/3", "4/9", "2024-01-03 00:00:00+00:00"):
        assert cell in lines[0]
    positions = [result.stdout.index(f" {dag} ") for dag in ("empty", "other", "etl")]
    assert positions == sorted(positions)  # newest first


# --- tasks ----------------------------------------------------------------------------


def test_tasks_json_order_and_shape(home: Path, db_url: str, seeded: Seeded) -> None:
    data = as_json(invoke(home, "tasks", str(seeded.etl), "-o", "json", db_url=db_url))
    assert [(row["logical_date"][:10], row["task_id"]) for row in data] == [
        (day, task_id) for day in ("2024-01-01", "2024-01-02", "2024-01-03") for task_id in TASK_IDS
    ]
    assert data[4] == {
        "dag_id": "etl",
        "task_id": "clean",
        "run_id": "backfill__2024-01-02",
        "logical_date": "2024-01-02T00:00:00+00:00",
        "state": "running",
        "try_number": 2,
        "max_tries": 2,
        "hostname": "w2",
        "start_date": "2024-01-01T00:03:00+00:00",
        "end_date": None,
        "pool": "default_pool",
        "last_error": "ValueError: boom",
        "result": None,
        "map_index": -1,
    }
    assert data[8]["state"] == "none"
    assert data[8]["hostname"] is None
    assert data[8]["start_date"] is None


def test_tasks_state_filter(home: Path, db_url: str, seeded: Seeded) -> None:
    def rows(state: str, backfill_id: int = seeded.etl) -> list[tuple[str, str]]:
        args = ["tasks", str(backfill_id), "--state", state, "-o", "json"]
        return [(r["run_id"], r["task_id"]) for r in as_json(invoke(home, *args, db_url=db_url))]

    assert rows("running") == [("backfill__2024-01-02", "clean")]
    assert rows("success") == [
        ("backfill__2024-01-01", "extract"),
        ("backfill__2024-01-01", "clean"),
        ("backfill__2024-01-01", "aggregate"),
        ("backfill__2024-01-02", "extract"),
    ]
    assert rows("failed") == []  # a known backfill without such TIs: empty, exit 0
    assert rows("none", seeded.empty) == []
    assert_user_error(
        invoke(home, "tasks", str(seeded.etl), "--state", "done", db_url=db_url),
        "'done' is not one of",
        "'up_for_retry'",
        "'upstream_failed'",
    )
    assert_user_error(
        invoke(home, "tasks", "999", "--state", "none", db_url=db_url), "no backfill with id 999"
    )


def test_tasks_table(home: Path, db_url: str, seeded: Seeded) -> None:
    result = invoke(home, "tasks", str(seeded.etl), db_url=db_url)
    assert result.exit_code == 0, result.output
    line = next(ln for ln in result.stdout.splitlines() if " clean " in ln and "running" in ln)
    for cell in ("2024-01-02 00:00:00+00:00", "2/3", "w2", "ValueError: boom"):
        assert cell in line
    empty = invoke(home, "tasks", str(seeded.empty), db_url=db_url)
    assert empty.exit_code == 0
    assert empty.stdout.strip() == f"backfill {seeded.empty} has no task instances"


# --- pause / cancel -------------------------------------------------------------------


def backfill_row(engine: Engine, backfill_id: int) -> dict[str, Any]:
    with engine.connect() as conn:
        row = conn.execute(sa.select(backfills).where(backfills.c.id == backfill_id)).one()
    return dict(row._mapping)


def ti_states(engine: Engine, backfill_id: int) -> list[tuple[str, str, int]]:
    stmt = (
        sa.select(task_instances.c.task_id, task_instances.c.state, task_instances.c.try_number)
        .join(dag_runs, dag_runs.c.id == task_instances.c.dag_run_id)
        .where(dag_runs.c.backfill_id == backfill_id)
        .order_by(dag_runs.c.logical_date, task_instances.c.id)
    )
    with engine.connect() as conn:
        return [(r.task_id, r.state, r.try_number) for r in conn.execute(stmt)]


def test_pause_a_running_backfill(home: Path, db_url: str, engine: Engine, seeded: Seeded) -> None:
    tis_before = ti_states(engine, seeded.etl)
    result = invoke(home, "pause", str(seeded.etl), db_url=db_url)
    assert result.exit_code == 0, result.output
    assert f"backfill {seeded.etl} paused" in result.stdout
    row = backfill_row(engine, seeded.etl)
    assert row["state"] == "paused"
    assert row["updated_at"] > T0
    assert ti_states(engine, seeded.etl) == tis_before  # in-flight work goes on
    paused = backfill_row(engine, seeded.etl)
    assert_user_error(
        invoke(home, "pause", str(seeded.etl), db_url=db_url),
        f"backfill {seeded.etl} is already paused",
    )
    assert backfill_row(engine, seeded.etl) == paused


def test_pause_refusals_write_nothing(
    home: Path, db_url: str, engine: Engine, seeded: Seeded
) -> None:
    before = {bid: backfill_row(engine, bid) for bid in (seeded.empty, seeded.other)}
    assert_user_error(
        invoke(home, "pause", str(seeded.empty), db_url=db_url),
        f"backfill {seeded.empty} is already failed",
    )
    assert_user_error(
        invoke(home, "pause", str(seeded.other), db_url=db_url),
        f"backfill {seeded.other} is queued: only a running backfill can be paused",
    )
    assert_user_error(invoke(home, "pause", "999", db_url=db_url), "no backfill with id 999")
    assert {bid: backfill_row(engine, bid) for bid in before} == before


@pytest.fixture
def dispatched(engine: Engine, seeded: Seeded) -> int:
    """Day 1's `aggregate` of etl queued for try 1, and a queued TI of `other` too."""
    with engine.begin() as conn:
        set_ti(conn, seeded.etl, 1, "aggregate", state="queued", try_number=1, queued_at=T0)
        set_ti(conn, seeded.other, 0, "extract", state="queued", try_number=1, queued_at=T0)
        ti_id = conn.execute(
            sa.select(task_instances.c.id).where(
                task_instances.c.state == "queued", task_instances.c.dag_id == "etl"
            )
        ).scalar_one()
    return int(ti_id)


def test_cancel_withdraws_queued_tis(
    home: Path, db_url: str, engine: Engine, seeded: Seeded, dispatched: int
) -> None:
    other_before = ti_states(engine, seeded.other)
    result = invoke(home, "cancel", str(seeded.etl), db_url=db_url)
    assert result.exit_code == 0, result.output
    assert "1 queued task instance withdrawn" in result.stdout
    assert backfill_row(engine, seeded.etl)["state"] == "cancelled"
    day1 = ti_states(engine, seeded.etl)[3:6]
    # queued -> scheduled; the running try is left to finish, fenced on its own claim.
    assert day1 == [
        ("extract", "success", 1),
        ("clean", "running", 2),
        ("aggregate", "scheduled", 1),
    ]
    assert ti_states(engine, seeded.other) == other_before  # another backfill's queued TI stays
    with engine.begin() as conn:
        journal = conn.execute(
            sa.select(ti_transitions).where(ti_transitions.c.task_instance_id == dispatched)
        ).all()
        # The message already published for try 1 can no longer start it.
        lost = claims.claim(conn, ti_id=dispatched, try_number=1, token="t" * 32,
                            claimant="h:1", hostname="h", now=T0)  # fmt: skip
    assert [(j.from_state, j.to_state) for j in journal][-1] == ("queued", "scheduled")
    assert journal[-1].actor.startswith("cli:")
    assert lost is None


def test_cancel_from_paused_and_queued(
    home: Path, db_url: str, engine: Engine, seeded: Seeded
) -> None:
    assert invoke(home, "pause", str(seeded.etl), db_url=db_url).exit_code == 0
    for backfill_id in (seeded.etl, seeded.other):
        result = invoke(home, "cancel", str(backfill_id), db_url=db_url)
        assert result.exit_code == 0, result.output
        assert "0 queued task instances withdrawn" in result.stdout
        assert backfill_row(engine, backfill_id)["state"] == "cancelled"


def test_cancel_refusals_write_nothing(
    home: Path, db_url: str, engine: Engine, seeded: Seeded, dispatched: int
) -> None:
    with engine.begin() as conn:
        force_state(conn, backfills, backfills.c.id == seeded.etl, BackfillState.SUCCESS)
    before = (backfill_row(engine, seeded.etl), ti_states(engine, seeded.etl))
    assert_user_error(
        invoke(home, "cancel", str(seeded.etl), db_url=db_url),
        f"backfill {seeded.etl} is already success",
    )
    assert (backfill_row(engine, seeded.etl), ti_states(engine, seeded.etl)) == before
    assert ("aggregate", "queued", 1) in before[1]
    assert invoke(home, "cancel", str(seeded.other), db_url=db_url).exit_code == 0
    assert_user_error(
        invoke(home, "cancel", str(seeded.other), db_url=db_url),
        f"backfill {seeded.other} is already cancelled",
    )
    assert_user_error(invoke(home, "cancel", "999", db_url=db_url), "no backfill with id 999")


# --- tasks: paging, filters and streaming at any size ---------------------------------

WIDE_DAYS = 40  # 120 TIs: more than the default page of 100
FAILED_DAYS = (5, 17)  # `clean` failed, `aggregate` upstream_failed
DONE_DAYS = 30  # days 0..29 ran; 30..39 have not started (none)


@pytest.fixture
def wide(engine: Engine) -> int:
    """A backfill of 40 daily runs x 3 tasks: 86 success, 2 failed, 2 upstream_failed,
    30 none (the last ten days)."""
    with engine.begin() as conn:
        backfill_id = seed(conn, "wide", WIDE_DAYS, created=T0, state="running")
        for day in range(DONE_DAYS):
            for task_id in TASK_IDS:
                set_ti(conn, backfill_id, day, task_id, **DONE)
        for day in FAILED_DAYS:
            set_ti(conn, backfill_id, day, "clean", state="failed", last_error="boom")
            set_ti(conn, backfill_id, day, "aggregate", state="upstream_failed")
    return backfill_id


def day(n: int) -> str:
    return iso(T0 + n * DAY)


def keys(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(logical date, task_id) of each row, in order."""
    return [(row["logical_date"], row["task_id"]) for row in rows]


def every_ti(home: Path, db_url: str, backfill_id: int, *args: str) -> list[dict[str, Any]]:
    result = invoke(home, "tasks", str(backfill_id), "-o", "json", "--limit", "0", *args,
                    db_url=db_url)  # fmt: skip
    assert result.stderr == ""
    rows: list[dict[str, Any]] = as_json(result)
    return rows


def test_tasks_json_limit_0_is_every_ti_in_order(home: Path, db_url: str, wide: int) -> None:
    rows = every_ti(home, db_url, wide)
    assert keys(rows) == [(day(d), task_id) for d in range(WIDE_DAYS) for task_id in TASK_IDS]
    assert rows[3 * 5 + 1] | {"end_date": None, "start_date": None} == {
        "dag_id": "wide", "task_id": "clean", "run_id": "backfill__2024-01-06",
        "logical_date": day(5), "state": "failed", "try_number": 1, "max_tries": 2,
        "hostname": "w1", "start_date": None, "end_date": None, "pool": "default_pool",
        "last_error": "boom", "result": None, "map_index": -1,
    }  # fmt: skip


def test_tasks_json_is_written_one_element_a_line(home: Path, db_url: str, wide: int) -> None:
    out = invoke(home, "tasks", str(wide), "-o", "json", "--limit", "3", db_url=db_url).stdout
    lines = out.split("\n")
    assert lines[0] == "["
    assert [line.endswith("},") for line in lines[1:4]] == [True, True, False]
    assert lines[4:] == ["]", ""]
    assert [json.loads(line.rstrip(",")) for line in lines[1:4]] == json.loads(out)
    empty = invoke(home, "tasks", str(wide), "-o", "json", "--state", "removed", db_url=db_url)
    assert empty.stdout == "[]\n"


def test_tasks_json_default_page_says_more_on_stderr(home: Path, db_url: str, wide: int) -> None:
    result = invoke(home, "tasks", str(wide), "-o", "json", db_url=db_url)
    assert json.loads(result.stdout) == every_ti(home, db_url, wide)[:100]
    assert result.stderr == (
        "warning: more TIs match than the 100 written from offset 0; use --offset 100 for "
        "the next ones, --limit 0 or -o jsonl for all\n"
    )
    last = invoke(home, "tasks", str(wide), "-o", "json", "--offset", "100", db_url=db_url)
    assert len(as_json(last)) == 20
    assert last.stderr == ""  # the last page: nothing more to say


@pytest.mark.parametrize(("limit", "offset"), [("7", "10"), ("1", "0"), ("50", "115")])
def test_tasks_json_pages(home: Path, db_url: str, wide: int, limit: str, offset: str) -> None:
    full = every_ti(home, db_url, wide)
    page = as_json(invoke(home, "tasks", str(wide), "-o", "json", "--limit", limit,
                          "--offset", offset, db_url=db_url))  # fmt: skip
    assert page == full[int(offset) : int(offset) + int(limit)]


def test_tasks_jsonl_streams_every_ti(home: Path, db_url: str, wide: int) -> None:
    result = invoke(home, "tasks", str(wide), "-o", "jsonl", db_url=db_url)
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert result.stdout.endswith("}\n")
    lines = result.stdout.splitlines()
    assert [json.loads(line) for line in lines] == every_ti(home, db_url, wide)  # all 120
    paged = invoke(home, "tasks", str(wide), "-o", "jsonl", "--limit", "2", "--offset", "3",
                   db_url=db_url)  # fmt: skip
    assert paged.stdout.splitlines() == lines[3:5]  # an explicit --limit still applies
    assert "--offset 5 for the next ones" in paged.stderr
    none = invoke(home, "tasks", str(wide), "-o", "jsonl", "--task-regex", "^x", db_url=db_url)
    assert (none.exit_code, none.stdout) == (0, "")


def test_tasks_json_escapes_what_it_must(home: Path, db_url: str, engine: Engine) -> None:
    error = 'ValueError: "quoted" \\ back\nslash\ttab \x01 \u00e9\u4e2d \U0001f600 </script>'
    with engine.begin() as conn:
        backfill_id = seed(conn, "t\u00e9st", 1, created=T0)
        set_ti(
            conn, backfill_id, 0, "clean", state="failed", hostname="h\u00f4te", last_error=error
        )
    for output in ("json", "jsonl"):
        result = invoke(home, "tasks", str(backfill_id), "-o", output, db_url=db_url)
        assert result.exit_code == 0, result.output
        lines = result.stdout.splitlines()
        rows = json.loads(result.stdout) if output == "json" else [json.loads(ln) for ln in lines]
        assert (rows[1]["dag_id"], rows[1]["hostname"], rows[1]["last_error"]) == (
            "t\u00e9st",
            "h\u00f4te",
            error,
        )
        assert len(lines) == (5 if output == "json" else 3)  # no raw newline inside a value


def test_tasks_state_filter_is_repeatable(home: Path, db_url: str, wide: int) -> None:
    rows = every_ti(home, db_url, wide, "--state", "upstream_failed", "--state", "failed")
    assert [(r["logical_date"], r["task_id"], r["state"]) for r in rows] == [
        (day(d), task_id, state)
        for d in FAILED_DAYS
        for task_id, state in (("clean", "failed"), ("aggregate", "upstream_failed"))
    ]


@pytest.mark.parametrize(
    ("regex", "tasks"),
    [("^c", ["clean"]), ("gg", ["aggregate"]), ("a", ["extract", "clean", "aggregate"]),
     ("^(extract|aggregate)$", ["extract", "aggregate"]), ("^x", [])],
)  # fmt: skip
def test_tasks_regex_is_re_search(
    home: Path, db_url: str, wide: int, regex: str, tasks: list[str]
) -> None:
    rows = every_ti(home, db_url, wide, "--task-regex", regex)
    assert keys(rows) == [(day(d), t) for d in range(WIDE_DAYS) for t in tasks]


@pytest.mark.parametrize(
    ("start", "end", "days"),
    [
        ("2024-01-05", "2024-01-07", [4, 5, 6]),  # both bounds inclusive
        ("2024-02-08", None, [38, 39]),
        (None, "2024-01-02", [0, 1]),
        ("2024-01-05T01:00:00+02:00", "2024-01-05T23:59:59", [4]),  # an offset is honoured
        ("2024-01-05T00:00:01", None, list(range(5, WIDE_DAYS))),
        ("2025-01-01", None, []),
    ],
)
def test_tasks_date_range(
    home: Path, db_url: str, wide: int, *, start: str | None, end: str | None, days: list[int]
) -> None:
    args = [*(["-s", start] if start else []), *(["--end-date", end] if end else [])]
    rows = every_ti(home, db_url, wide, *args)
    assert keys(rows) == [(day(d), task_id) for d in days for task_id in TASK_IDS]


def test_tasks_filters_combine(home: Path, db_url: str, wide: int) -> None:
    args = ["--state", "failed", "--state", "success", "--task-regex", "^cl", "-s", "2024-01-10"]
    rows = every_ti(home, db_url, wide, *args)
    assert [(r["logical_date"], r["state"]) for r in rows] == [
        (day(d), "failed" if d in FAILED_DAYS else "success") for d in range(9, DONE_DAYS)
    ]
    page = as_json(invoke(home, "tasks", str(wide), "-o", "json", *args, "--limit", "2",
                          "--offset", "7", db_url=db_url))  # fmt: skip
    assert page == rows[7:9]


def table_lines(result: Result) -> list[list[str]]:
    """The cells of each table row, for rows of rich's default box."""
    assert result.exit_code == 0, result.output
    return [
        [cell.strip() for cell in line.strip("│┃").split("│")]
        for line in result.stdout.splitlines()
        if line.startswith("│")
    ]


def test_tasks_table_counts_then_a_page(home: Path, db_url: str, wide: int) -> None:
    result = invoke(home, "tasks", str(wide), db_url=db_url)
    out = result.stdout
    header = next(line for line in out.splitlines() if "task_id" in line)
    assert header.split() == [
        "┃", "task_id", "┃", "none", "┃", "success", "┃", "failed", "┃", "upstream_failed",
        "┃", "total", "┃",
    ]  # fmt: skip
    rows = table_lines(result)
    assert rows[:4] == [
        ["extract", "10", "30", "-", "-", "40"],
        ["clean", "10", "28", "2", "-", "40"],
        ["aggregate", "10", "28", "-", "2", "40"],
        ["3 tasks", "30", "86", "2", "2", "120"],
    ]
    tis = rows[4:]
    assert len(tis) == 100
    assert tis[0][:3] == ["2024-01-01 00:00:00+00:00", "extract", "success"]
    assert tis[-1][:3] == ["2024-02-03 00:00:00+00:00", "extract", "none"]  # day 33
    assert out.splitlines()[-1] == (
        "showing TIs 1-100 of 120; use --offset/--limit, --state, --task-regex, -s/-e to see others"
    )


def test_tasks_table_filtered_and_paged(home: Path, db_url: str, wide: int) -> None:
    args = ["--task-regex", "^(clean|aggregate)$", "-e", "2024-01-20", "--limit", "5"]
    result = invoke(home, "tasks", str(wide), *args, "--offset", "30", db_url=db_url)
    rows = table_lines(result)
    assert rows[:3] == [
        ["clean", "18", "2", "-", "20"],
        ["aggregate", "18", "-", "2", "20"],
        ["2 tasks", "36", "2", "2", "40"],
    ]
    assert [row[:3] for row in rows[3:]] == [
        ["2024-01-16 00:00:00+00:00", "clean", "success"],
        ["2024-01-16 00:00:00+00:00", "aggregate", "success"],
        ["2024-01-17 00:00:00+00:00", "clean", "success"],
        ["2024-01-17 00:00:00+00:00", "aggregate", "success"],
        ["2024-01-18 00:00:00+00:00", "clean", "failed"],
    ]
    assert result.stdout.splitlines()[-1].startswith("showing TIs 31-35 of 40; use ")
    past = invoke(home, "tasks", str(wide), *args, "--offset", "40", db_url=db_url)
    assert (
        past.stdout.splitlines()[-1] == "no TIs from offset 40: 40 in all; use a smaller --offset"
    )


def test_tasks_table_shows_everything_without_a_showing_line(
    home: Path, db_url: str, wide: int
) -> None:
    result = invoke(home, "tasks", str(wide), "--limit", "0", db_url=db_url)
    assert len(table_lines(result)) == 4 + 120
    assert "showing" not in result.stdout
    failed = invoke(home, "tasks", str(wide), "--state", "failed", db_url=db_url)
    assert [row[:3] for row in table_lines(failed)] == [
        ["clean", "2", "2"],
        ["1 task", "2", "2"],
        ["2024-01-06 00:00:00+00:00", "clean", "failed"],
        ["2024-01-18 00:00:00+00:00", "clean", "failed"],
    ]
    assert "showing" not in failed.stdout


def test_tasks_table_when_nothing_matches(home: Path, db_url: str, wide: int) -> None:
    result = invoke(home, "tasks", str(wide), "--state", "removed", "--task-regex", "^c",
                    "-s", "2024-01-02", db_url=db_url)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        f"backfill {wide} has no task instances matching --state removed --task-regex '^c' "
        "-s '2024-01-02'\n"
    )


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--task-regex", "(x"], ["--task-regex", "'(x' is not a regular expression"]),
        (["-s", "2024-13-01"], ["--start-date: '2024-13-01' is not a date"]),
        (["--end-date", "yesterday"], ["--end-date: 'yesterday' is not a date"]),
        (["-s", "2024-01-05", "-e", "2024-01-04"], ["--start-date 2024-01-05 is after --end-date"]),
        (["--limit", "-1"], ["--limit", "-1 is not in the range x>=0"]),
        (["--offset", "-5"], ["--offset", "-5 is not in the range x>=0"]),
        (["--limit", "ten"], ["--limit", "'ten' is not a valid integer"]),
        (["--state", "done"], ["--state", "'done' is not one of"]),
        (["-o", "yaml"], ["--output", "'yaml' is not one of 'table', 'json', 'jsonl'"]),
    ],
)  # fmt: skip
def test_tasks_bad_input_names_the_option(
    home: Path, db_url: str, wide: int, args: list[str], fragments: list[str]
) -> None:
    for output in ("table", "jsonl"):
        assert_user_error(invoke(home, "tasks", str(wide), "-o", output, *args, db_url=db_url),
                          *fragments)  # fmt: skip


@pytest.mark.parametrize("output", ["table", "json", "jsonl"])
def test_tasks_unknown_id(home: Path, db_url: str, wide: int, output: str) -> None:
    assert_user_error(
        invoke(home, "tasks", "999", "-o", output, "--state", "failed", db_url=db_url),
        "no backfill with id 999; see `backfill list`",
    )


def test_tasks_stream_from_a_server_side_cursor(home: Path, pg_url: str) -> None:
    """A streamed read holds one batch, not the result: PostgreSQL must hand the rows
    over from a named (server-side) cursor, fetched STREAM_BATCH at a time."""
    engine = create_engine_for(pg_url)
    with engine.begin() as conn:
        backfill_id = seed(conn, "etl", 3, created=T0)
    engine.dispose()
    reads: list[bool] = []

    def spy(_conn: Any, cursor: Any, statement: str, *_args: Any) -> None:
        if "ORDER BY dag_runs.logical_date, task_instances.id" in statement:
            reads.append(cursor.name is not None)  # psycopg2: a named cursor is server-side

    sa.event.listen(Engine, "before_cursor_execute", spy)
    try:
        for output in ("jsonl", "json", "table"):
            result = invoke(home, "tasks", str(backfill_id), "-o", output, db_url=pg_url)
            assert result.exit_code == 0, result.output
    finally:
        sa.event.remove(Engine, "before_cursor_execute", spy)
    assert reads == [True, True, True]


def test_tasks_jsonl_into_a_closed_pipe_ends_quietly(home: Path, db_url: str) -> None:
    engine = create_engine_for(db_url)
    with engine.begin() as conn:
        backfill_id = seed(conn, "long", 400, created=T0)  # 1,200 TIs: more than a pipe holds
    engine.dispose()
    env = {**os.environ, "BACKFILL_HOME": str(home), "BACKFILL_DATABASE_URL": db_url}
    argv = [sys.executable, "-m", "backfill.cli", "tasks", str(backfill_id), "-o", "jsonl"]
    with subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        assert proc.stderr is not None
        first = json.loads(proc.stdout.readline())
        proc.stdout.close()  # as `| head -1` does
        stderr = proc.stderr.read()
        code = proc.wait(timeout=60)
    assert first["run_id"] == "backfill__2024-01-01"
    assert (code, stderr) == (1, b"")  # click's EPIPE handling: quiet, no traceback


# --- list: paging ---------------------------------------------------------------------


def test_list_pages(home: Path, db_url: str, seeded: Seeded) -> None:
    def ids(*args: str) -> list[int]:
        return [row["id"] for row in as_json(invoke(home, "list", "-o", "json", *args,
                                                     db_url=db_url))]  # fmt: skip

    newest_first = [seeded.empty, seeded.other, seeded.etl]
    assert ids() == newest_first  # JSON: every backfill unless --limit says otherwise
    assert ids("--limit", "2") == newest_first[:2]
    assert ids("--limit", "2", "--offset", "2") == newest_first[2:]
    assert ids("--offset", "1") == newest_first[1:]
    assert ids("--limit", "0") == newest_first
    page = as_json(invoke(home, "list", "-o", "json", "--offset", "2", db_url=db_url))
    assert (page[0]["task_instances_total"], page[0]["task_instances_finished"]) == (9, 4)

    result = invoke(home, "list", "--limit", "1", "--offset", "1", db_url=db_url)
    assert [row[:3] for row in table_lines(result)] == [[str(seeded.other), "other", "queued"]]
    assert result.stdout.splitlines()[-1] == (
        "showing backfills 2-2 of 3; use --offset/--limit (--limit 0: all), --state to see others"
    )
    assert "showing" not in invoke(home, "list", db_url=db_url).stdout  # 3 < the default 50
    past = invoke(home, "list", "--offset", "3", db_url=db_url)
    assert past.stdout == "no backfills from offset 3: 3 in all; use a smaller --offset\n"
    assert_user_error(invoke(home, "list", "--limit", "-2", db_url=db_url), "--limit")


def test_list_table_default_page_is_the_newest_50(home: Path, db_url: str, engine: Engine) -> None:
    with engine.begin() as conn:
        for n in range(55):
            runs.insert_backfill(conn, dag_id=f"dag_{n:02d}", fingerprint="f" * 64, start=T0,
                                 end=T0, options={}, conf={}, now=T0 + n * DAY)  # fmt: skip
    result = invoke(home, "list", db_url=db_url)
    shown = [row[1] for row in table_lines(result)]
    assert shown == [f"dag_{n:02d}" for n in reversed(range(5, 55))]
    assert result.stdout.splitlines()[-1].startswith("showing backfills 1-50 of 55; use ")
    assert len(as_json(invoke(home, "list", "-o", "json", db_url=db_url))) == 55
