"""`store.audit`: a backfill's journals checked against the guarantees (SQLite and PostgreSQL).

Good histories are made by the real coordinator and the real claim/finish
statements (`support.passes.ByHand`), never by hand-written journal rows: each
must audit clean. Each tampered history changes ONE thing, by direct SQL (or a
real statement called as a bug would), and must fail exactly its own check. The
tampering that journals a pair its table does not list happens inside a
transaction the test rolls back, so the database it leaves passes the root
conftest's journal check.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from support.passes import (
    D1,
    WORKER,
    ByHand,
    backfill_state,
    claim_and_finish,
    diamond,
    noop,
    ti_states,
)

from backfill import DAG
from backfill.messages import TaskMessage
from backfill.model.states import BACKFILL_FINISHED, BackfillState, TIState
from backfill.store import audit, claims, control, reads
from backfill.store.audit import LEFT_IN, Violation
from backfill.store.journal import Step
from backfill.store.schema import (
    backfill_transitions,
    backfills,
    dag_runs,
    run_transitions,
    task_instances,
    ti_transitions,
)

ti, run, bf, tj = task_instances, dag_runs, backfills, ti_transitions
TAMPERER = "test:tamper"  # the actor of a tampering UPDATE: no worker


def audit_of(bind: Engine | Connection, backfill_id: int) -> tuple[audit.Audited, list[Violation]]:
    """The audit as the command reads it: one snapshot (or the test's own transaction)."""
    if isinstance(bind, Connection):
        found = audit.audited(bind, backfill_id)
        assert found is not None
        return found, list(audit.violations(bind, found))
    with reads.reading(bind) as conn:
        return audit_of(conn, backfill_id)


def journal_rows(conn: Connection) -> int:
    """Every row of the three journals (the test's database holds one backfill's)."""
    tables = (ti_transitions, run_transitions, backfill_transitions)
    return sum(conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one() for t in tables)


def assert_clean(engine: Engine, backfill_id: int) -> None:
    found, violations = audit_of(engine, backfill_id)
    assert violations == []
    with engine.connect() as conn:
        assert found.transitions == journal_rows(conn) > 0


def ti_id_of(conn: Connection, task_id: str, logical_date: Any = D1) -> int:
    stmt = (
        sa.select(ti.c.id)
        .select_from(ti.join(run))
        .where(ti.c.task_id == task_id, run.c.logical_date == logical_date)
    )
    return int(conn.execute(stmt).scalar_one())


def steps_of(conn: Connection, ti_id: int) -> list[Step]:
    stmt = sa.select(tj.c.id, tj.c.from_state, tj.c.to_state, tj.c.actor).where(
        tj.c.task_instance_id == ti_id
    )
    return [Step(*row) for row in conn.execute(stmt.order_by(tj.c.id))]


def move(conn: Connection, table: sa.Table, row_id: int, *states: str) -> None:
    """Tamper: UPDATE the row through `states`, one statement each (the triggers journal
    every step), whatever the transition table says."""
    values = {"updated_at": pendulum.now("UTC")}
    if table is ti:
        values["updated_by"] = TAMPERER
    for state in states:
        conn.execute(sa.update(table).where(table.c.id == row_id).values(state=state, **values))


def test_every_ended_state_says_what_it_may_leave_tis_in() -> None:
    assert set(LEFT_IN) == BACKFILL_FINISHED
    assert all(not states & {TIState.QUEUED, TIState.RUNNING} for states in LEFT_IN.values())


# --- good histories ---------------------------------------------------------------------


def test_a_backfill_driven_to_success_audits_clean(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    driver = ByHand(engine, db_url, tmp_path, diamond(max_active_runs=2))
    backfill_id = driver.new(3)
    driver.drive(backfill_id)
    assert backfill_state(engine, backfill_id) is BackfillState.SUCCESS
    assert_clean(engine, backfill_id)


def test_retries_and_a_rescheduled_sensor_audit_clean(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    """A retry is a new try; a reschedule claims the SAME try again, legitimately."""
    dag = DAG("tries", schedule="@daily", start_date=pendulum.datetime(2024, 1, 1))
    dag.add_task("flaky", noop, retries=2)
    dag.add_task("sensor", noop)
    driver = ByHand(engine, db_url, tmp_path, dag)
    backfill_id = driver.new(1)
    pokes: list[int] = []

    def outcome(m: TaskMessage) -> TIState:
        if m.task_id == "flaky":
            return TIState.UP_FOR_RETRY if m.try_number < 3 else TIState.SUCCESS
        pokes.append(m.try_number)
        return TIState.UP_FOR_RESCHEDULE if len(pokes) < 3 else TIState.SUCCESS

    driver.drive(backfill_id, outcome=outcome)
    assert pokes == [1, 1, 1]  # three claims of try 1
    assert ti_states(engine) == {(D1, "flaky"): ("success", 3), (D1, "sensor"): ("success", 1)}
    assert_clean(engine, backfill_id)


def test_a_reaped_try_whose_worker_comes_back_too_late_audits_clean(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    dag = DAG("reap", schedule="@daily", start_date=pendulum.datetime(2024, 1, 1))
    dag.add_task("t", noop, retries=1, retry_delay=timedelta(seconds=1))
    driver = ByHand(engine, db_url, tmp_path, dag)
    backfill_id = driver.new(1)
    (message,) = driver.passes(backfill_id, 2)
    lost = claim_and_finish(engine, message, None, now=driver.clock.tick())
    assert lost is not None
    driver.clock.tick(10)  # past the heartbeat timeout: the next pass reaps the try
    driver.drive(backfill_id)
    with engine.begin() as conn:  # the fence refuses the late outcome: nothing is written
        assert not claims.finish(conn, lost, TIState.SUCCESS, actor=WORKER, now=driver.clock.now)
    assert ti_states(engine) == {(D1, "t"): ("success", 2)}
    assert_clean(engine, backfill_id)


def test_a_failed_backfill_may_leave_tis_never_started(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    """Stop on failure: the runs after a failure never start, their TIs stay `none`."""
    driver = ByHand(engine, db_url, tmp_path, diamond())
    backfill_id = driver.new(3, max_active_runs=1)

    def outcome(m: TaskMessage) -> TIState:
        return TIState.FAILED if m.logical_date == D1.isoformat() else TIState.SUCCESS

    driver.drive(backfill_id, outcome=outcome)
    assert backfill_state(engine, backfill_id) is BackfillState.FAILED
    assert ("none", 0) in ti_states(engine).values()
    assert_clean(engine, backfill_id)


def test_a_deadlocked_backfill_audits_clean(engine: Engine, db_url: str, tmp_path: Path) -> None:
    dag = DAG("stuck", schedule="@daily", start_date=pendulum.datetime(2024, 1, 1))
    dag.add_task("first", noop) >> dag.add_task("needs_pool", noop, pool="nowhere")
    driver = ByHand(engine, db_url, tmp_path, dag)
    backfill_id = driver.new(1)
    driver.drive(backfill_id)
    assert backfill_state(engine, backfill_id) is BackfillState.FAILED
    assert ti_states(engine)[(D1, "needs_pool")][0] in ("none", "scheduled")
    assert_clean(engine, backfill_id)


def test_tis_outside_the_task_regex_are_not_the_backfills_to_finish(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    """A reprocessed run keeps its unselected TIs as they were: here one left unstarted
    by an earlier deadlock, in a backfill that then succeeds."""
    dag = DAG("stuck", schedule="@daily", start_date=pendulum.datetime(2024, 1, 1))
    dag.add_task("first", noop) >> dag.add_task("needs_pool", noop, pool="nowhere")
    driver = ByHand(engine, db_url, tmp_path, dag)
    driver.drive(driver.new(1))
    again = driver.new(1, reprocess="completed", task_regex="^first$")
    driver.drive(again)
    assert backfill_state(engine, again) is BackfillState.SUCCESS
    assert ti_states(engine)[(D1, "needs_pool")][0] in ("none", "scheduled")
    assert audit_of(engine, again)[1] == []


def test_a_cancelled_backfill_is_clean_once_its_running_tries_have_ended(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    driver = ByHand(engine, db_url, tmp_path, diamond())
    backfill_id = driver.new(2, max_active_runs=2)
    first, *_ = driver.passes(backfill_id, 2)
    running = claim_and_finish(engine, first, None, now=driver.clock.tick())
    assert running is not None
    with engine.begin() as conn:
        assert control.cancel(conn, backfill_id, actor="cli:test", now=driver.clock.tick()) == 3
    driver.passes(backfill_id)  # the wind-down

    _, draining = audit_of(engine, backfill_id)
    assert [(v.check, v.task_id, v.state, v.claimant) for v in draining] == [
        ("not_final", first.task_id, "running", "test:1")
    ]
    assert draining[0].heartbeat_at is not None
    with engine.begin() as conn:
        assert claims.finish(
            conn, running, TIState.UP_FOR_RETRY, actor=WORKER, now=driver.clock.now
        )
    assert_clean(engine, backfill_id)  # up_for_retry: a retry that will not come


# --- tampered histories: each fails its own check ---------------------------------------


def succeeded(engine: Engine, db_url: str, home: Path, dag: DAG | None = None) -> int:
    """A backfill of one date of `dag` (default: a >> b, c) driven to success."""
    driver = ByHand(engine, db_url, home, dag or diamond())
    backfill_id = driver.new(1)
    driver.drive(backfill_id)
    assert backfill_state(engine, backfill_id) is BackfillState.SUCCESS
    return backfill_id


def test_a_ti_transition_missing_from_its_table_is_reported(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    backfill_id = succeeded(engine, db_url, tmp_path)
    with engine.connect() as conn:  # rolled back: see the module docstring
        b = ti_id_of(conn, "b")
        move(conn, ti, b, "running", "success")  # success -> running is not in TRANSITIONS
        illegal = steps_of(conn, b)[-2]
        found, violations = audit_of(conn, backfill_id)
        conn.rollback()
    assert (illegal.from_state, illegal.to_state, illegal.actor) == ("success", "running", TAMPERER)
    (violation,) = violations
    assert violation == Violation(
        check="transition",
        journal="ti_transitions",
        dag_id="coord_test",
        task_id="b",
        logical_date=D1,
        try_number=1,
        steps=(illegal,),
    )
    assert found.transitions > 0


def test_run_and_backfill_transitions_missing_from_their_tables_are_reported(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    backfill_id = succeeded(engine, db_url, tmp_path)
    with engine.connect() as conn:
        run_id = conn.execute(sa.select(run.c.id)).scalar_one()
        move(conn, run, run_id, "running", "success")  # success -> running: not in the table
        move(conn, bf, backfill_id, "paused")  # success -> paused: not in the table
        violations = audit_of(conn, backfill_id)[1]
        conn.rollback()
    assert [(v.check, v.journal, v.dag_id, v.task_id, v.logical_date) for v in violations] == [
        ("transition", "run_transitions", "coord_test", None, D1),
        ("transition", "backfill_transitions", "coord_test", None, None),
    ]
    assert [(s.from_state, s.to_state, s.actor) for v in violations for s in v.steps] == [
        ("success", "running", None),
        ("success", "paused", None),
    ]


def test_another_backfills_journal_is_not_audited(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    first = succeeded(engine, db_url, tmp_path)
    dag = DAG("other", schedule="@daily", start_date=pendulum.datetime(2024, 1, 1))
    dag.add_task("t", noop)
    second = succeeded(engine, db_url, tmp_path, dag)
    with engine.connect() as conn:
        move(conn, ti, ti_id_of(conn, "b"), "running", "success")  # the first's TI
        assert [v.check for v in audit_of(conn, first)[1]] == ["transition"]
        assert audit_of(conn, second)[1] == []
        conn.rollback()


def test_a_try_claimed_twice_is_reported(engine: Engine, db_url: str, tmp_path: Path) -> None:
    backfill_id = succeeded(engine, db_url, tmp_path)
    with engine.begin() as conn:
        a = ti_id_of(conn, "a")
        claim, *_ = [s for s in steps_of(conn, a) if s.to_state == "running"]
        # Tamper: a second claimant's row for try 1, as if two claims had both won.
        conn.execute(
            sa.insert(tj).values(
                task_instance_id=a,
                from_state="queued",
                to_state="running",
                try_number=1,
                actor="worker:other:2",
                at=pendulum.now("UTC"),
            )
        )
        second = steps_of(conn, a)[-1]
    (violation,) = audit_of(engine, backfill_id)[1]
    assert (violation.check, violation.task_id, violation.try_number) == ("double_claim", "a", 1)
    assert violation.steps == (claim, second)
    assert claim.actor == WORKER


def test_a_write_after_the_claim_was_lost_is_reported(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    dag = DAG("reap", schedule="@daily", start_date=pendulum.datetime(2024, 1, 1))
    dag.add_task("t", noop, retries=1, retry_delay=timedelta(seconds=1))
    driver = ByHand(engine, db_url, tmp_path, dag)
    backfill_id = driver.new(1)
    (message,) = driver.passes(backfill_id, 2)
    assert claim_and_finish(engine, message, None, now=driver.clock.tick()) is not None
    driver.clock.tick(10)
    driver.passes(backfill_id)  # reaps try 1: running -> up_for_retry
    with engine.begin() as conn:
        # Tamper: the reaped worker's outcome lands anyway, as if the fence had failed.
        conn.execute(
            sa.insert(tj).values(
                task_instance_id=message.ti_id,
                from_state="running",
                to_state="success",
                try_number=1,
                actor=WORKER,
                at=driver.clock.now,
            )
        )
        claim, reap, *_, late = steps_of(conn, message.ti_id)[1:]
    driver.drive(backfill_id)  # try 2 runs and succeeds
    (violation,) = audit_of(engine, backfill_id)[1]
    assert (violation.check, violation.task_id, violation.try_number) == (
        "write_after_lost_claim",
        "t",
        1,
    )
    assert violation.steps == (claim, reap, late)
    assert (reap.to_state, reap.actor.startswith("coordinator:")) == ("up_for_retry", True)


def test_a_try_ended_by_another_worker_than_its_claimant_is_reported(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    """Through the real finish: its fence is the claim token, the actor is the caller's."""
    driver = ByHand(engine, db_url, tmp_path, diamond())
    backfill_id = driver.new(1)
    first, *_ = driver.passes(backfill_id, 2)
    won = claim_and_finish(engine, first, None, now=driver.clock.tick())
    assert won is not None
    with engine.begin() as conn:
        assert claims.finish(
            conn, won, TIState.SUCCESS, actor="worker:other:2", now=driver.clock.now
        )
    driver.drive(backfill_id)
    (violation,) = audit_of(engine, backfill_id)[1]
    assert (violation.check, violation.task_id) == ("write_after_lost_claim", first.task_id)
    assert [(s.from_state, s.to_state, s.actor) for s in violation.steps] == [
        ("queued", "running", WORKER),
        ("running", "success", "worker:other:2"),
    ]


@pytest.mark.parametrize("path", [("none",), ("none", "queued")])
def test_a_ti_an_ended_backfill_left_unfinished_is_reported(
    engine: Engine, db_url: str, tmp_path: Path, path: tuple[str, ...]
) -> None:
    backfill_id = succeeded(engine, db_url, tmp_path)
    with engine.begin() as conn:
        c = ti_id_of(conn, "c")
        move(conn, ti, c, *path)  # cleared (and queued) after the backfill ended: legal steps
        last = steps_of(conn, c)[-1]
    (violation,) = audit_of(engine, backfill_id)[1]
    assert (violation.check, violation.task_id, violation.state) == ("not_final", "c", path[-1])
    assert violation.steps == (last,)
