"""`backfill db clean` and `store.clean`, on real SQLite and PostgreSQL databases.

What is deleted: ended backfills, with their runs, TIs, the three journals, the
TIs' logs and refused writes,
that ended before the cut-off. What never is: a running backfill, one that
ended after the cut-off, a cancelled one whose try is still running.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pendulum
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from support.cli import assert_user_error, invoke
from support.factories import queued_backfill
from support.states import force_state

from backfill.model.states import BackfillState, RunState, TIState
from backfill.store import claims, clean, logs
from backfill.store.schema import (
    RefusalKind,
    backfill_transitions,
    backfills,
    dag_runs,
    refused_writes,
    run_transitions,
    task_instances,
    ti_logs,
    ti_transitions,
)

OLD = pendulum.datetime(2024, 3, 1, tz="UTC")
CUT = pendulum.datetime(2024, 6, 1, tz="UTC")
RECENT = pendulum.datetime(2024, 9, 1, tz="UTC")


def _backfill(
    engine: Engine, dag_id: str, state: BackfillState, at: datetime, *, one_running: bool = False
) -> int:
    """A backfill of one run of tasks a and b, in `state` since `at`. Ended: every TI
    succeeded and the run too, unless `one_running` (a's try still runs, as after a cancel)."""
    made = queued_backfill(engine, dag_id=dag_id, tasks={"a": 1, "b": 1})
    ti, run, bf = task_instances, dag_runs, backfills
    with engine.begin() as conn:
        if state is not BackfillState.RUNNING:
            done = [made.ti_ids["b"]] if one_running else made.ids
            force_state(conn, ti, ti.c.id.in_(done), TIState.SUCCESS, updated_at=at)
            if one_running:
                force_state(conn, ti, ti.c.id == made.ti_ids["a"], TIState.RUNNING, updated_at=at)
            else:
                force_state(conn, run, run.c.id == made.dag_run_id, RunState.SUCCESS, updated_at=at)
        force_state(conn, bf, bf.c.id == made.backfill_id, state, updated_at=at)
        for ti_id in made.ids:  # what the workers stored: a log chunk, a refused delivery
            logs.append(conn, ti_id=ti_id, try_number=1, start_byte=0, data="hello\n", at=at)
            claims.refuse(
                conn, ti_id=ti_id, try_number=1, kind=RefusalKind.CLAIM, claimant="h:1", now=at
            )
    return made.backfill_id


def _rows(conn: Connection, backfill_id: int) -> dict[str, int]:
    """How many rows of each table belong to `backfill_id`."""
    run_ids = sa.select(dag_runs.c.id).where(dag_runs.c.backfill_id == backfill_id)
    ti_ids = sa.select(task_instances.c.id).where(task_instances.c.dag_run_id.in_(run_ids))
    counts = {
        "backfills": sa.select(sa.func.count()).where(backfills.c.id == backfill_id),
        "backfill_transitions": sa.select(sa.func.count()).where(
            backfill_transitions.c.backfill_id == backfill_id
        ),
        "dag_runs": sa.select(sa.func.count()).where(dag_runs.c.id.in_(run_ids)),
        "run_transitions": sa.select(sa.func.count()).where(
            run_transitions.c.dag_run_id.in_(run_ids)
        ),
        "task_instances": sa.select(sa.func.count()).where(task_instances.c.id.in_(ti_ids)),
        **{
            child.name: sa.select(sa.func.count()).where(child.c.task_instance_id.in_(ti_ids))
            for child in (ti_transitions, ti_logs, refused_writes)
        },
    }
    return {name: conn.execute(stmt).scalar_one() for name, stmt in counts.items()}


def _scene(engine: Engine) -> dict[str, int]:
    return {
        "success": _backfill(engine, "d1", BackfillState.SUCCESS, OLD),
        "failed": _backfill(engine, "d2", BackfillState.FAILED, OLD),
        "running": _backfill(engine, "d3", BackfillState.RUNNING, OLD),
        "recent": _backfill(engine, "d4", BackfillState.SUCCESS, RECENT),
        "cancelled_busy": _backfill(engine, "d5", BackfillState.CANCELLED, OLD, one_running=True),
    }


def test_ended_backfills_go_with_everything_they_own_a_batch_at_a_time(engine: Engine) -> None:
    ids = _scene(engine)
    with engine.connect() as conn:
        found = clean.cleanable(conn, CUT)
        before = {name: _rows(conn, bid) for name, bid in ids.items()}
    assert [(c.id, c.state, c.runs, c.task_instances) for c in found] == [
        (ids["success"], "success", 1, 2),
        (ids["failed"], "failed", 1, 2),
    ]
    assert all(n > 0 for n in before["success"].values()), before  # every journal has rows

    steps = []
    for backfill in found:
        while True:  # one row per transaction: 2 TIs, then the run, then the backfill
            with engine.begin() as conn:
                step = clean.delete_some(conn, backfill.id, CUT, batch=1)
            assert step is not None
            steps.append(step)
            if step.backfill:
                break
    ti_steps = [clean.Deleted(task_instances=1)] * 2
    one = [*ti_steps, clean.Deleted(runs=1), clean.Deleted(backfill=True)]
    assert steps == one * 2

    with engine.connect() as conn:
        after = {name: _rows(conn, bid) for name, bid in ids.items()}
        assert clean.cleanable(conn, CUT) == []
    assert after["success"] == after["failed"] == dict.fromkeys(before["success"], 0)
    for kept in ("running", "recent", "cancelled_busy"):
        assert after[kept] == before[kept], kept


def test_a_backfill_that_is_not_cleanable_is_never_touched(engine: Engine) -> None:
    ids = _scene(engine)
    for name in ("running", "recent", "cancelled_busy"):
        with engine.begin() as conn:
            untouched = _rows(conn, ids[name])
            assert clean.delete_some(conn, ids[name], CUT) is None
            assert _rows(conn, ids[name]) == untouched
    with engine.begin() as conn:
        assert clean.delete_some(conn, 999_999, CUT) is None  # no such backfill


def test_db_clean_lists_deletes_and_reports(engine: Engine, db_url: str, tmp_path: Path) -> None:
    ids = _scene(engine)
    clean_ = ("db", "clean", "--before", "2024-06-01")

    dry = invoke(tmp_path, *clean_, "--dry-run", "-o", "json", db_url=db_url)
    assert dry.exit_code == 0, dry.output
    report = json.loads(dry.stdout)
    assert (report["before"], report["dry_run"]) == ("2024-06-01T00:00:00+00:00", True)
    assert [(b["id"], b["runs"], b["task_instances"]) for b in report["backfills"]] == [
        (ids["success"], 1, 2),
        (ids["failed"], 1, 2),
    ]
    table = invoke(tmp_path, *clean_, "--dry-run", db_url=db_url)
    would = f"would delete backfill {ids['success']} of d1 (success, ended 2024-03-01"
    assert would in table.stdout
    assert "dry run: nothing deleted; 2 backfills (2 runs, 4 task instances) would be" in (
        table.stdout
    )
    with engine.connect() as conn:
        assert len(clean.cleanable(conn, CUT)) == 2  # nothing was deleted

    done = invoke(tmp_path, *clean_, db_url=db_url)
    assert done.exit_code == 0, done.output
    assert f"deleted backfill {ids['failed']} of d2 (failed, ended 2024-03-01" in done.stdout
    total = "deleted 2 backfills (2 runs, 4 task instances) that ended before 2024-06-01"
    assert total in done.stdout
    again = invoke(tmp_path, *clean_, "-o", "json", db_url=db_url)
    assert json.loads(again.stdout)["backfills"] == []
    with engine.connect() as conn:
        remaining = conn.execute(sa.select(backfills.c.id).order_by(backfills.c.id)).scalars().all()
    assert remaining == [ids["running"], ids["recent"], ids["cancelled_busy"]]


def test_db_clean_refuses_a_bad_date_and_creates_no_database(tmp_path: Path) -> None:
    assert_user_error(
        invoke(tmp_path, "db", "clean", "--before", "last week"), "--before", "'last week'"
    )
    empty = invoke(tmp_path, "db", "clean", "--before", "2024-06-01")
    assert empty.exit_code == 0, empty.output
    assert empty.stdout == "no backfill ended before 2024-06-01T00:00:00+00:00: nothing to delete\n"
    assert not (tmp_path / "backfill.db").exists()
