"""`backfill audit ID` through the CLI, on both backends.

A backfill run end to end by a real coordinator on a real `celery worker`
audits clean. The histories with violations are driven in-process through the
real store statements (`support.passes.ByHand`), then tampered with by direct
SQL, each tampering saying what it fakes; tests/store/test_audit.py proves each
check on its own.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from support.cli import assert_user_error, invoke
from support.passes import D1, ENGINE_DAGS, WORKER, ByHand, diamond
from support.private_redis import PrivateRedis
from support.processes import Coordinators, WorkerPool
from support.stack import Stack

from backfill.cli.audit import line
from backfill.model.states import BackfillState, TIState
from backfill.planning.run_options import RunOptions
from backfill.store.audit import Audited, Check, Violation
from backfill.store.journal import Step
from backfill.store.schema import (
    backfill_transitions,
    run_transitions,
    task_instances,
    ti_transitions,
)

tj, ti = ti_transitions, task_instances
TI_KEY = "coord_test/{task}/" + D1.isoformat() + " try 1"


@pytest.fixture
def stack(db_url: str, broker: PrivateRedis, tmp_path: Path) -> Stack:
    return Stack.create(db_url, broker, tmp_path).with_dags(ENGINE_DAGS)


def journal_rows(engine: Engine) -> int:
    with engine.connect() as conn:
        return sum(
            conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
            for table in (ti_transitions, run_transitions, backfill_transitions)
        )


def test_a_backfill_run_by_real_workers_audits_clean(
    stack: Stack, engine: Engine, workers: WorkerPool, coordinators: Coordinators, tmp_path: Path
) -> None:
    workers.start(stack, 1, concurrency=2)
    dag = stack.dag("engine_example")
    backfill_id = ByHand(engine, stack.db_url, tmp_path, dag).new(2)
    outcome = coordinators.thread(stack, dag, backfill_id).result(90)
    assert outcome.state is BackfillState.SUCCESS

    checked = journal_rows(engine)
    assert checked > 12 * 3  # each TI: none -> scheduled -> queued -> running -> success
    done = invoke(tmp_path, "audit", str(backfill_id), db_url=stack.db_url)
    assert (done.exit_code, done.stdout) == (0, f"{checked} transitions checked, 0 violations\n")
    as_json = invoke(tmp_path, "audit", str(backfill_id), "-o", "json", db_url=stack.db_url)
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout) == {
        "backfill_id": backfill_id,
        "transitions_checked": checked,
        "violations": [],
    }


def succeeded(engine: Engine, db_url: str, home: Path) -> tuple[int, dict[str, int]]:
    """A backfill of a >> b, c on one date, driven to success; the TI ids by task."""
    driver = ByHand(engine, db_url, home, diamond())
    backfill_id = driver.new()
    driver.drive(backfill_id)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(ti.c.task_id, ti.c.id))
        return backfill_id, {row.task_id: row.id for row in rows}


def journal(conn: sa.Connection, ti_id: int, from_state: str, to_state: str, actor: str) -> int:
    """Tamper: a journal row for try 1 of the TI, as no statement of the store wrote it."""
    stmt = sa.insert(tj).values(
        task_instance_id=ti_id,
        from_state=from_state,
        to_state=to_state,
        try_number=1,
        actor=actor,
        at=pendulum.now("UTC"),
    )
    return int(conn.execute(stmt.returning(tj.c.id)).scalar_one())


def test_each_violation_is_one_line_and_the_exit_code_1(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    backfill_id, ids = succeeded(engine, db_url, tmp_path)
    with engine.begin() as conn:
        # a: a second claim of try 1, as if two claimants had both won it;
        # b: its worker writes again after its own outcome, as if unfenced;
        # c: cleared to `none` after the backfill ended (a legal step, the wrong moment).
        twice = journal(conn, ids["a"], "queued", "running", "worker:other:2")
        late = journal(conn, ids["b"], "running", "success", WORKER)
        clear = sa.update(ti).where(ti.c.id == ids["c"])
        conn.execute(clear.values(state="none", updated_by="test:tamper"))
    checked = journal_rows(engine)

    done = invoke(tmp_path, "audit", str(backfill_id), db_url=db_url)

    assert done.exit_code == 1, done.output
    lines = done.stdout.splitlines()
    assert [line.split(": ")[:2] for line in lines[:-1]] == [
        ["double_claim", TI_KEY.format(task="a")],
        ["write_after_lost_claim", TI_KEY.format(task="b")],
        ["not_final", TI_KEY.format(task="c")],
    ]
    assert (
        f"claimed again: queued -> running (ti_transitions #{twice} by worker:other:2)"
        in (lines[0])
    )
    assert f"{WORKER} wrote running -> success (ti_transitions #{late} by {WORKER})" in lines[1]
    assert "after the try had left running: running -> success (#" in lines[1]
    assert "none in a success backfill" in lines[2]
    assert lines[-1] == f"{checked} transitions checked, 3 violations"


@pytest.fixture
def illegal(engine: Engine, db_url: str, tmp_path: Path) -> Iterator[tuple[int, int]]:
    """A succeeded backfill whose TI a's journal holds success -> running, a pair
    TRANSITIONS does not list, inserted by hand: (backfill id, row id). The row is
    deleted after the test, so the database passes the root conftest's journal check."""
    backfill_id, ids = succeeded(engine, db_url, tmp_path)
    with engine.begin() as conn:
        row_id = journal(conn, ids["a"], "success", "running", "test:tamper")
    yield backfill_id, row_id
    with engine.begin() as conn:
        conn.execute(sa.delete(tj).where(tj.c.id == row_id))


def test_json_lists_each_violation_with_its_journal_rows(
    illegal: tuple[int, int], db_url: str, tmp_path: Path
) -> None:
    backfill_id, row_id = illegal
    done = invoke(tmp_path, "audit", str(backfill_id), "-o", "json", db_url=db_url)
    assert done.exit_code == 1, done.output
    report: dict[str, Any] = json.loads(done.stdout)  # JSON and nothing else
    assert report["backfill_id"] == backfill_id
    assert report["transitions_checked"] > 0
    assert report["violations"] == [
        {
            "check": "transition",
            "dag_id": "coord_test",
            "task_id": "a",
            "logical_date": D1.isoformat(),
            "try_number": 1,
            "detail": f"success -> running (ti_transitions #{row_id} by test:tamper) "
            "is not in TRANSITIONS",
            "journal": "ti_transitions",
            "steps": [
                {
                    "id": row_id,
                    "from_state": "success",
                    "to_state": "running",
                    "actor": "test:tamper",
                }
            ],
        }
    ]


def test_an_unknown_backfill_is_refused(db_url: str, tmp_path: Path) -> None:
    assert_user_error(
        invoke(tmp_path, "audit", "99", db_url=db_url), "no backfill with id 99", "backfill list"
    )


def test_without_a_database_there_is_nothing_to_audit(home: Path) -> None:
    assert_user_error(invoke(home, "audit", "1", "-o", "json"), "no backfill with id 1")
    assert not home.exists()  # the embedded database was not created


def test_the_lines_of_a_try_still_running_after_a_cancel_and_of_a_backfills_journal() -> None:
    """The wording of what tests/store/test_audit.py finds while a cancel drains, and of
    an illegal transition of the backfill itself."""
    beat = D1 + timedelta(minutes=5)
    found = Audited(
        backfill_id=1,
        dag_id="d",
        state=BackfillState.CANCELLED,
        options=RunOptions(),
        transitions=9,
    )
    running = Violation(
        check=Check.NOT_FINAL,
        journal="ti_transitions",
        dag_id="d",
        task_id="t",
        logical_date=D1,
        try_number=2,
        steps=(Step(7, "queued", "running", "worker:h:1"),),
        state=TIState.RUNNING,
        claimant="h:1",
        heartbeat_at=beat,
    )
    assert line(running, found) == (
        f"not_final: d/t/{D1.isoformat()} try 2: still running in a cancelled backfill: "
        "nothing of an ended backfill is left running "
        f"(claimed by h:1, last heartbeat {beat.isoformat()}); "
        "last journal row queued -> running (#7 by worker:h:1)"
    )
    reopened = Violation(
        check=Check.TRANSITION,
        journal="backfill_transitions",
        dag_id="d",
        task_id=None,
        logical_date=None,
        try_number=None,
        steps=(Step(3, "cancelled", "running", None),),
    )
    assert line(reopened, found) == (
        "transition: backfill 1 of d: cancelled -> running (backfill_transitions #3) "
        "is not in BACKFILL_TRANSITIONS"
    )
