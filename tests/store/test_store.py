"""The coordinator-side store (`store.runs`, `store.tis`) on real SQLite and PostgreSQL.

Each transition is checked for the rows it may change, the rows it must not
(a compare-and-set miss), what it returns, and the one journal row the
trigger writes per state change, with its actor. The limits tests prove that
two queuers with their own connections never overfill a shared limit.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pendulum
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from support.states import force_state

from backfill.model.dag import DAG
from backfill.model.states import BackfillState, RunState, TIState
from backfill.model.task_options import DEFAULT_POOL
from backfill.planning.limits import admit
from backfill.planning.snapshot import LimitCounts, PastTI, TIRow
from backfill.store import claims, control, lease, pass_reads, past, runs, schema, status, tis
from backfill.store.runs import NewRun, TaskSpec

T0 = datetime(2024, 1, 1, tzinfo=UTC)
NOW = datetime(2024, 3, 1, 12, tzinfo=UTC)
ACTOR = "coordinator:test"
NO_LIMITS = LimitCounts(pool_slots={}, pool_sizes={}, dag_active=0, task_active={})
_S = TIState
ti_table = schema.task_instances


# -- builders --------------------------------------------------------------------


def spec(task_id: str, **values: Any) -> TaskSpec:
    fields: dict[str, Any] = {
        "pool": DEFAULT_POOL,
        "pool_slots": 1,
        "queue": "default",
        "priority_weight": 1,
        "max_tries": 0,
    }
    return TaskSpec(task_id=task_id, **(fields | values))


def make_backfill(
    conn: Connection,
    *,
    dag_id: str = "d",
    n_runs: int = 1,
    tasks: Sequence[TaskSpec] = (spec("a"),),
    first: datetime = T0,
    start: int = 0,
) -> tuple[int, list[int]]:
    """A backfill of `n_runs` daily runs from `first`, `start` of them running."""
    dates = [first + timedelta(days=i) for i in range(n_runs)]
    bid = runs.insert_backfill(
        conn,
        dag_id=dag_id,
        fingerprint="f" * 16,
        start=dates[0],
        end=dates[-1],
        options={"max_active_runs": 2},
        conf={"k": 1},
        now=NOW,
    )
    new = [
        NewRun(
            run_id=f"backfill__{d.isoformat()}",
            logical_date=d,
            data_interval_start=d,
            data_interval_end=d + timedelta(days=1),
        )
        for d in dates
    ]
    dag_run_ids = runs.insert_runs(
        conn, backfill_id=bid, dag_id=dag_id, runs=new, tasks=tasks, conf={"k": 1}, now=NOW
    )
    runs.start_runs(conn, bid, start, dag_id=dag_id, limit=100, backwards=False, now=NOW)
    return bid, dag_run_ids


_PATH_FROM_QUEUED: dict[BackfillState, tuple[BackfillState, ...]] = {
    BackfillState.QUEUED: (),
    BackfillState.RUNNING: (BackfillState.RUNNING,),
    BackfillState.PAUSED: (BackfillState.RUNNING, BackfillState.PAUSED),
    BackfillState.SUCCESS: (BackfillState.SUCCESS,),
    BackfillState.FAILED: (BackfillState.RUNNING, BackfillState.FAILED),
    BackfillState.CANCELLED: (BackfillState.CANCELLED,),
}


def bring_backfill_to(conn: Connection, bid: int, state: BackfillState) -> None:
    """Move a queued backfill to `state` the way the code would: only by transitions
    in BACKFILL_TRANSITIONS (the journal check of every test holds them to it)."""
    for step in _PATH_FROM_QUEUED[state]:
        assert runs.set_backfill_state(conn, bid, step, now=NOW)


def start_some(
    conn: Connection, bid: int, count: int, *, limit: int = 100, backwards: bool = False
) -> int:
    """Start up to `count` runs of backfill `bid` (of DAG "d")."""
    return runs.start_runs(conn, bid, count, dag_id="d", limit=limit, backwards=backwards, now=NOW)


def ti_ids(conn: Connection, dag_run_id: int) -> dict[str, int]:
    rows = conn.execute(
        sa.select(ti_table.c.task_id, ti_table.c.id).where(ti_table.c.dag_run_id == dag_run_id)
    )
    return {r.task_id: r.id for r in rows}


def ti_row(conn: Connection, ti_id: int) -> Any:
    return conn.execute(sa.select(ti_table).where(ti_table.c.id == ti_id)).one()


def force(conn: Connection, ti_id: int, **values: Any) -> None:
    """Put a TI in a given state behind the store's back (as another process would), by
    transitions TRANSITIONS lists; without `state`, only its other `values` change."""
    values.setdefault("updated_at", NOW)
    values.setdefault("updated_by", "test:setup")
    where = ti_table.c.id == ti_id
    if "state" in values:
        force_state(conn, ti_table, where, values.pop("state"), **values)
    else:
        conn.execute(sa.update(ti_table).where(where).values(**values))


def seen(conn: Connection, backfill_id: int) -> dict[str, TIRow]:
    """The TIs of the running runs, as the planner would see them, by task_id (one run)."""
    return {t.task_id: t for t in pass_reads.read_snapshot(conn, backfill_id, NO_LIMITS).tis}


def journal_mark(conn: Connection) -> int:
    j = schema.ti_transitions
    return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(j.c.id), 0))).scalar_one())


def journal(conn: Connection, after: int) -> list[tuple[int, str, str, int, str]]:
    j = schema.ti_transitions
    rows = conn.execute(
        sa.select(j.c.task_instance_id, j.c.from_state, j.c.to_state, j.c.try_number, j.c.actor)
        .where(j.c.id > after)
        .order_by(j.c.task_instance_id)
    )
    return [tuple(r) for r in rows]


def run_states(conn: Connection, dag_run_ids: Sequence[int]) -> list[RunState]:
    r = schema.dag_runs
    rows = conn.execute(sa.select(r.c.id, r.c.state).where(r.c.id.in_(dag_run_ids)))
    by_id = {row.id: RunState(row.state) for row in rows}
    return [by_id[i] for i in dag_run_ids]


def add_pool(conn: Connection, name: str, slots: int) -> None:
    conn.execute(sa.insert(schema.pools).values(name=name, slots=slots))


@contextmanager
def statements(engine: Engine) -> Iterator[list[str]]:
    """Every SQL statement the engine sends while the block runs (BEGINs excluded)."""
    seen_sql: list[str] = []

    def record(_conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        if not sql.lstrip().upper().startswith("BEGIN"):
            seen_sql.append(sql)

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen_sql
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


# -- backfills and runs ----------------------------------------------------------


def test_insert_creates_backfill_runs_and_their_tis(engine: Engine) -> None:
    tasks = [
        spec("a"),
        spec("b", pool="p", pool_slots=2, queue="q", priority_weight=7, max_tries=3),
    ]
    with engine.begin() as conn:
        bid, dag_run_ids = make_backfill(conn, n_runs=3, tasks=tasks)
        row = runs.lock_backfill(conn, bid)
        assert row is not None
        assert (row.dag_id, row.state, row.start, row.end) == (
            "d",
            BackfillState.QUEUED,
            T0,
            T0 + timedelta(days=2),
        )
        assert (row.options, row.conf, row.lease_owner, row.lease_epoch) == (
            {"max_active_runs": 2},
            {"k": 1},
            None,
            0,
        )
        r = schema.dag_runs
        dates = conn.execute(
            sa.select(r.c.id, r.c.logical_date, r.c.state).where(r.c.backfill_id == bid)
        ).all()
        # ids come back in the order the runs were given
        assert [(d.id, d.logical_date) for d in dates] == [
            (dag_run_ids[i], T0 + timedelta(days=i)) for i in range(3)
        ]
        assert {d.state for d in dates} == {RunState.QUEUED}
        b = ti_row(conn, ti_ids(conn, dag_run_ids[1])["b"])
        assert (b.state, b.try_number, b.max_tries, b.pool, b.pool_slots) == ("none", 0, 3, "p", 2)
        assert (b.queue, b.priority_weight, b.dag_id) == ("q", 7, "d")
        assert conn.execute(sa.select(sa.func.count()).select_from(ti_table)).scalar_one() == 6
        assert (
            runs.insert_runs(
                conn, backfill_id=bid, dag_id="d", runs=[], tasks=tasks, conf={}, now=NOW
            )
            == []
        )


def test_lock_backfill_of_an_unknown_id_is_none(engine: Engine) -> None:
    with engine.begin() as conn:
        assert runs.lock_backfill(conn, 12345) is None


@pytest.mark.postgres
def test_lock_backfill_holds_the_row_until_the_transaction_ends(pg_url: str) -> None:
    from backfill.store.db import create_engine_for

    eng = create_engine_for(pg_url)
    try:
        with eng.begin() as conn:
            bid, _ = make_backfill(conn)
        with eng.connect() as holder, holder.begin():
            assert runs.lock_backfill(holder, bid) is not None
            with eng.connect() as other, pytest.raises(sa.exc.OperationalError, match="lock"):
                other.exec_driver_sql(
                    f"SELECT id FROM backfills WHERE id = {bid} FOR UPDATE NOWAIT"
                )
        with eng.connect() as other:  # released at commit
            other.exec_driver_sql(f"SELECT id FROM backfills WHERE id = {bid} FOR UPDATE NOWAIT")
    finally:
        eng.dispose()


def test_with_no_run_running_the_backlog_is_read_on_its_own(engine: Engine) -> None:
    with engine.begin() as conn:
        bid, _ = make_backfill(conn, n_runs=3, start=0)
        with statements(engine) as sql:
            snap = pass_reads.read_snapshot(conn, bid, NO_LIMITS)
    assert len(sql) == 2, sql  # no row carried the backlog: it is read apart
    assert (snap.runs, snap.tis, snap.queued_runs, snap.earlier_failures) == ((), (), 3, False)


def test_the_backlog_is_counted_no_further_than_a_pass_can_start(engine: Engine) -> None:
    with engine.begin() as conn:
        bid, _ = make_backfill(conn, n_runs=6, start=1)
        assert pass_reads.read_snapshot(conn, bid, NO_LIMITS).queued_runs == 5
        assert pass_reads.read_snapshot(conn, bid, NO_LIMITS, backlog_cap=2).queued_runs == 2
        assert pass_reads.read_snapshot(conn, bid, NO_LIMITS, backlog_cap=9).queued_runs == 5


def test_read_snapshot_is_one_statement_for_the_tis_of_running_runs(engine: Engine) -> None:
    with engine.begin() as conn:
        bid, dag_run_ids = make_backfill(conn, n_runs=4, tasks=[spec("a"), spec("b")], start=2)
        other, _ = make_backfill(conn, dag_id="e", n_runs=2, start=2)  # must not leak in
        a1 = ti_ids(conn, dag_run_ids[1])["a"]
        force(conn, a1, state=_S.UP_FOR_RETRY, try_number=1, next_try_at=NOW)
        limits = LimitCounts(pool_slots={"p": 1}, pool_sizes={"p": 2}, dag_active=1, task_active={})
        with statements(engine) as sql:
            snap = pass_reads.read_snapshot(conn, bid, limits)
    assert len(sql) == 1, sql  # the TIs, and the backlog on every row
    assert sum("task_instances.try_number" in s for s in sql) == 1
    assert [r.id for r in snap.runs] == dag_run_ids[:2]  # oldest first
    assert [r.logical_date for r in snap.runs] == [T0, T0 + timedelta(days=1)]
    assert {r.state for r in snap.runs} == {RunState.RUNNING}
    assert [(t.dag_run_id, t.task_id) for t in snap.tis] == [
        (dag_run_ids[0], "a"),
        (dag_run_ids[0], "b"),
        (dag_run_ids[1], "a"),
        (dag_run_ids[1], "b"),
    ]
    retry = next(t for t in snap.tis if t.id == a1)
    assert (retry.state, retry.try_number, retry.next_try_at) == (_S.UP_FOR_RETRY, 1, NOW)
    assert snap.queued_runs == 2
    assert snap.limits is limits
    assert other != bid


def test_read_snapshot_sees_failures_of_runs_no_longer_running(engine: Engine) -> None:
    with engine.begin() as conn:
        bid, dag_run_ids = make_backfill(conn, n_runs=3, tasks=[spec("a"), spec("b")], start=2)
        force(conn, ti_ids(conn, dag_run_ids[1])["a"], state=_S.FAILED, try_number=1)
        assert not pass_reads.read_snapshot(conn, bid, NO_LIMITS).earlier_failures  # still running
        runs.finish_runs(conn, [(dag_run_ids[0], RunState.SUCCESS)], now=NOW)
        assert not pass_reads.read_snapshot(conn, bid, NO_LIMITS).earlier_failures
        force(conn, ti_ids(conn, dag_run_ids[0])["b"], state=_S.UPSTREAM_FAILED)
        snap = pass_reads.read_snapshot(conn, bid, NO_LIMITS)
        assert snap.earlier_failures
        assert (len(snap.runs), snap.queued_runs) == (1, 1)
        # --task-regex: the failures of tasks it leaves out are not the backfill's.
        assert not pass_reads.read_snapshot(conn, bid, NO_LIMITS, task_ids={"a"}).earlier_failures
        assert pass_reads.read_snapshot(conn, bid, NO_LIMITS, task_ids={"b"}).earlier_failures


def test_has_failures_counts_failed_tis_of_the_selected_tasks(engine: Engine) -> None:
    with engine.begin() as conn:
        bid, dag_run_ids = make_backfill(conn, n_runs=2, tasks=[spec("a"), spec("b")], start=1)
        other, _ = make_backfill(conn, dag_id="e", n_runs=1, start=1)
        assert not pass_reads.has_failures(conn, bid)
        force(conn, ti_ids(conn, dag_run_ids[1])["b"], state=_S.FAILED, try_number=1)  # queued run
        assert pass_reads.has_failures(conn, bid)
        assert pass_reads.has_failures(conn, bid, task_ids=["a", "b"])
        assert not pass_reads.has_failures(conn, bid, task_ids=["a"])
        assert not pass_reads.has_failures(conn, other)


def test_start_runs_is_a_rolling_window_oldest_first(engine: Engine) -> None:
    with engine.begin() as conn:
        bid, dag_run_ids = make_backfill(conn, n_runs=5)
        other, other_runs = make_backfill(conn, dag_id="e", n_runs=2)
        assert start_some(conn, bid, 0) == 0
        assert start_some(conn, bid, -3) == 0
        assert start_some(conn, bid, 2) == 2
        states = run_states(conn, dag_run_ids)
        assert states == [RunState.RUNNING] * 2 + [RunState.QUEUED] * 3
        runs.finish_runs(conn, [(dag_run_ids[0], RunState.SUCCESS)], now=NOW)
        assert start_some(conn, bid, 1) == 1
        assert run_states(conn, dag_run_ids)[2] is RunState.RUNNING
        assert start_some(conn, bid, 10) == 2  # only 2 left
        assert start_some(conn, bid, 10) == 0
        assert run_states(conn, other_runs) == [RunState.QUEUED] * 2
        start = conn.execute(
            sa.select(schema.dag_runs.c.start_date).where(schema.dag_runs.c.id == dag_run_ids[1])
        ).scalar_one()
        assert start == NOW
        assert other != bid


def test_start_runs_backwards_starts_the_newest_first(engine: Engine) -> None:
    with engine.begin() as conn:
        bid, dag_run_ids = make_backfill(conn, n_runs=4)
        assert start_some(conn, bid, 3, backwards=True) == 3
        assert run_states(conn, dag_run_ids) == [RunState.QUEUED] + [RunState.RUNNING] * 3


def test_start_runs_holds_max_active_runs_across_the_backfills_of_a_dag(engine: Engine) -> None:
    with engine.begin() as conn:
        first, first_runs = make_backfill(conn, n_runs=4)
        second, second_runs = make_backfill(conn, n_runs=4, first=T0 + timedelta(days=10))
        make_backfill(conn, dag_id="e", n_runs=3, start=3)  # another DAG's runs do not count
        assert start_some(conn, first, 3, limit=3) == 3
        assert start_some(conn, second, 3, limit=3) == 0  # the DAG has 3 running already
        assert start_some(conn, second, 3, limit=5) == 2  # its own, larger window
        assert start_some(conn, first, 1, limit=3) == 0
        runs.finish_runs(conn, [(first_runs[0], RunState.SUCCESS)], now=NOW)
        runs.finish_runs(conn, [(first_runs[1], RunState.FAILED)], now=NOW)
        assert start_some(conn, first, 4, limit=3) == 0  # 3 still running: 1 + 2
        assert start_some(conn, first, 4, limit=4) == 1
        assert run_states(conn, first_runs)[2:] == [RunState.RUNNING, RunState.RUNNING]
        assert run_states(conn, second_runs) == [RunState.RUNNING] * 2 + [RunState.QUEUED] * 2


def _running_of(engine: Engine, dag_id: str) -> int:
    r = schema.dag_runs
    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count()).where(
                    r.c.dag_id == dag_id, r.c.state == RunState.RUNNING.value
                )
            ).scalar_one()
        )


def _window_pass(
    conn: Connection, backfill_id: int, *, counted: threading.Event | None = None
) -> int:
    """A pass's run-starting step: lock the backfill, then fill the DAG's window of 2."""
    assert runs.lock_backfill(conn, backfill_id) is not None
    started = start_some(conn, backfill_id, 2, limit=2)
    if counted is not None:
        counted.set()
    return started


def test_two_backfills_behind_a_barrier_never_run_more_than_the_window(engine: Engine) -> None:
    barrier = threading.Barrier(2)

    def contend(backfill_id: int) -> int:
        with engine.connect() as conn:
            barrier.wait(timeout=30)
            with conn.begin():
                return _window_pass(conn, backfill_id)

    for rep in range(10):
        with engine.begin() as conn:
            pair = [
                make_backfill(conn, n_runs=2, first=T0 + timedelta(days=10 * (2 * rep + i)))[0]
                for i in range(2)
            ]
        with ThreadPoolExecutor(2) as pool:
            started = [f.result() for f in [pool.submit(contend, bid) for bid in pair]]
        assert sorted(started) == [0, 2], rep
        assert _running_of(engine, "d") == 2, rep
        with engine.begin() as conn:  # end them for the next repetition
            r = schema.dag_runs
            force_state(conn, r, r.c.state == RunState.RUNNING.value, RunState.SUCCESS)


@pytest.mark.postgres
def test_a_second_backfill_counts_runs_after_the_first_commits(pg_url: str) -> None:
    """Deterministic: the first starter holds the DAG's lock until the second is seen
    blocked on it; without the lock the second would count 0 running and start 2 more."""
    from backfill.store.db import create_engine_for

    engine = create_engine_for(pg_url)
    try:
        with engine.begin() as conn:
            first = make_backfill(conn, n_runs=3)[0]
            second = make_backfill(conn, n_runs=3, first=T0 + timedelta(days=10))[0]
        first_counted, second_counted = threading.Event(), threading.Event()
        second_pid: list[int] = []

        def run_first() -> int:
            with engine.connect() as conn, conn.begin():
                started = _window_pass(conn, first, counted=first_counted)
                _wait_blocked_or(engine, second_pid, second_counted)
                return started

        def run_second() -> int:
            with engine.connect() as conn:
                second_pid.append(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
                conn.commit()
                assert first_counted.wait(timeout=30)
                with conn.begin():
                    return _window_pass(conn, second, counted=second_counted)

        with ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(run_first), pool.submit(run_second)]
            assert [f.result() for f in futures] == [2, 0]
        assert _running_of(engine, "d") == 2
    finally:
        engine.dispose()


# -- the past of depends_on_past ------------------------------------------------------


def test_past_states_reads_every_run_of_the_dag_in_one_statement(engine: Engine) -> None:
    day = [T0 + timedelta(days=i) for i in range(8)]
    with engine.begin() as conn:
        _, old = make_backfill(conn, n_runs=3, tasks=[spec("a"), spec("b")], start=2)
        _, new = make_backfill(conn, n_runs=2, tasks=[spec("b")], first=day[5], start=1)
        make_backfill(conn, dag_id="e", n_runs=3, tasks=[spec("a")], start=3)  # other DAG
        force(conn, ti_ids(conn, old[0])["a"], state=_S.SUCCESS, try_number=1)
        force(conn, ti_ids(conn, old[1])["a"], state=_S.FAILED, try_number=1)
        force(conn, ti_ids(conn, new[0])["b"], state=_S.RUNNING, try_number=1)
        runs.finish_runs(conn, [(old[0], RunState.SUCCESS), (old[1], RunState.FAILED)], now=NOW)
        with statements(engine) as sql:
            found = past.past_states(
                conn,
                dag_id="d",
                task_ids=["a", "b"],
                # day 3 and 4 have no run; day 6's run has no TI of "a".
                dates=[pendulum.instance(day[0]), day[1], day[3], day[5], day[6]],
            )
        assert len(sql) == 1, sql
        assert found == {
            ("a", day[0]): PastTI(_S.SUCCESS, RunState.SUCCESS),
            ("b", day[0]): PastTI(_S.NONE, RunState.SUCCESS),
            ("a", day[1]): PastTI(_S.FAILED, RunState.FAILED),
            ("b", day[1]): PastTI(_S.NONE, RunState.FAILED),
            ("b", day[5]): PastTI(_S.RUNNING, RunState.RUNNING),
            ("b", day[6]): PastTI(_S.NONE, RunState.QUEUED),
        }
        only_a = past.past_states(conn, dag_id="d", task_ids=["a"], dates=[day[1]])
        assert only_a == {("a", day[1]): PastTI(_S.FAILED, RunState.FAILED)}
        with statements(engine) as sql:
            assert past.past_states(conn, dag_id="d", task_ids=[], dates=day) == {}
            assert past.past_states(conn, dag_id="d", task_ids=["a"], dates=[]) == {}
        assert sql == []


def test_finish_runs_has_one_winner_across_transactions(engine: Engine) -> None:
    """Two coordinators finishing the same run: exactly one UPDATE gets it back (where the
    run's callbacks fire), whatever the interleaving."""
    with engine.begin() as conn:
        _, (dag_run_id,) = make_backfill(conn, n_runs=1, start=1)
    barrier = threading.Barrier(2)
    won: list[int] = []

    def finish() -> None:
        barrier.wait()
        with engine.begin() as conn:
            won.append(len(runs.finish_runs(conn, [(dag_run_id, RunState.SUCCESS)], now=NOW)))

    threads = [threading.Thread(target=finish) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(won) == [0, 1]


def test_finish_runs_only_from_running(engine: Engine) -> None:
    with engine.begin() as conn:
        _, dag_run_ids = make_backfill(conn, n_runs=3, start=2)
        outcomes = [
            (dag_run_ids[0], RunState.SUCCESS),
            (dag_run_ids[1], RunState.FAILED),
            (dag_run_ids[2], RunState.SUCCESS),  # still queued: not finished
        ]
        ended = runs.finish_runs(conn, outcomes, now=NOW)
        assert sorted((r.id, r.state) for r in ended) == outcomes[:2]  # what the callbacks get
        assert all(r.conf == {"k": 1} and r.data_interval_end > r.logical_date for r in ended)
        assert run_states(conn, dag_run_ids) == [RunState.SUCCESS, RunState.FAILED, RunState.QUEUED]
        assert runs.finish_runs(conn, outcomes, now=NOW) == []  # already finished
        assert runs.finish_runs(conn, [], now=NOW) == []
        end = conn.execute(
            sa.select(schema.dag_runs.c.end_date).where(schema.dag_runs.c.id == dag_run_ids[1])
        ).scalar_one()
        assert end == NOW


def test_set_backfill_state_is_compare_and_set(engine: Engine) -> None:
    with engine.begin() as conn:
        bid, _ = make_backfill(conn)
        q, r = BackfillState.QUEUED, BackfillState.RUNNING
        assert runs.set_backfill_state(conn, bid, r, seen=q, now=NOW)
        assert not runs.set_backfill_state(conn, bid, BackfillState.SUCCESS, seen=q, now=NOW)
        row = runs.lock_backfill(conn, bid)
        assert row is not None
        assert row.state is r
        # Without `seen`: from any state the table leads to the target from.
        assert runs.set_backfill_state(conn, bid, BackfillState.PAUSED, now=NOW)
        assert not runs.set_backfill_state(conn, bid, BackfillState.SUCCESS, now=NOW)
        assert runs.set_backfill_state(conn, bid, BackfillState.CANCELLED, now=NOW)
        assert not runs.set_backfill_state(conn, bid + 1, BackfillState.CANCELLED, now=NOW)
        # A source the table does not allow is refused before any SQL runs.
        with pytest.raises(ValueError, match="queued -> paused is not in BACKFILL_TRANSITIONS"):
            runs.set_backfill_state(conn, bid, BackfillState.PAUSED, seen=q, now=NOW)


def test_lease_renew_refuse_expire_take_over_release(engine: Engine) -> None:
    ttl = timedelta(seconds=60)
    with engine.begin() as conn:
        bid, _ = make_backfill(conn)
        assert lease.acquire_lease(conn, bid, owner="A", now=NOW, ttl=ttl) == 1
        later = NOW + timedelta(seconds=30)
        assert lease.acquire_lease(conn, bid, owner="A", now=later, ttl=ttl) == 1  # renewed
        assert lease.acquire_lease(conn, bid, owner="B", now=later, ttl=ttl) is None
        # A's renewal at +30 s holds the lease until +90 s
        assert lease.acquire_lease(conn, bid, owner="B", now=NOW + ttl, ttl=ttl) is None
        after = NOW + timedelta(seconds=91)
        assert lease.acquire_lease(conn, bid, owner="B", now=after, ttl=ttl) == 2  # taken over
        assert lease.acquire_lease(conn, bid, owner="A", now=after, ttl=ttl) is None
        row = runs.lock_backfill(conn, bid)
        assert row is not None
        assert (row.lease_owner, row.lease_epoch, row.lease_expires_at) == ("B", 2, after + ttl)
        lease.release_lease(conn, bid, owner="A")  # not A's to release
        assert lease.acquire_lease(conn, bid, owner="A", now=after, ttl=ttl) is None
        lease.release_lease(conn, bid, owner="B")
        row = runs.lock_backfill(conn, bid)
        assert row is not None
        assert (row.lease_owner, row.lease_expires_at) == (None, None)
        assert lease.acquire_lease(conn, bid, owner="A", now=after, ttl=ttl) == 3
        assert lease.acquire_lease(conn, bid + 1, owner="A", now=after, ttl=ttl) is None


def test_resume_unpauses_and_takes_the_lease_only_if_free(engine: Engine) -> None:
    ttl = timedelta(seconds=60)
    paused, running = BackfillState.PAUSED, BackfillState.RUNNING

    def lease_of(conn: Connection, bid: int) -> tuple[object, ...]:
        row = runs.lock_backfill(conn, bid)
        assert row is not None
        return (row.state, row.lease_owner, row.lease_epoch)

    with engine.begin() as conn:
        bid, _ = make_backfill(conn)
        assert not control.resume(conn, bid, owner="R", now=NOW, ttl=ttl)  # queued: a miss
        assert runs.set_backfill_state(conn, bid, running, now=NOW)
        assert not control.resume(conn, bid, owner="R", now=NOW, ttl=ttl)  # running: a miss
        assert lease_of(conn, bid) == (running, None, 0)  # ... that took no lease
        assert runs.set_backfill_state(conn, bid, paused, now=NOW)
        assert control.resume(conn, bid, owner="R", now=NOW, ttl=ttl)  # the lease was free
        assert lease_of(conn, bid) == (running, "R", 1)
        # A live driver's lease (a `backfill run` waiting through the pause) stays its.
        assert runs.set_backfill_state(conn, bid, paused, now=NOW)
        assert control.resume(conn, bid, owner="S", now=NOW + timedelta(seconds=1), ttl=ttl)
        assert lease_of(conn, bid) == (running, "R", 1)
        assert not control.resume(conn, bid + 1, owner="R", now=NOW, ttl=ttl)  # unknown


# -- task-instance transitions ---------------------------------------------------


def test_set_state_only_from_the_seen_state_and_allowed_sources(engine: Engine) -> None:
    tasks = [spec("a"), spec("b"), spec("c"), spec("q"), spec("r", max_tries=1)]
    with engine.begin() as conn:
        bid, dag_run_ids = make_backfill(conn, tasks=tasks, start=1)
        ids = ti_ids(conn, dag_run_ids[0])
        force(conn, ids["q"], state=_S.QUEUED, try_number=1)
        force(conn, ids["r"], state=_S.UP_FOR_RETRY, try_number=1)
        view = seen(conn, bid)
        force(conn, ids["c"], state=_S.SCHEDULED)  # changed after the snapshot
        mark = journal_mark(conn)
        picked = [view["a"], view["b"], view["c"], view["q"]]
        changed = tis.set_state(conn, picked, _S.UPSTREAM_FAILED, actor=ACTOR, now=NOW)
        assert sorted(changed) == sorted([ids["a"], ids["b"]])  # c moved, q is not a source
        assert [ti_row(conn, ids[t]).state for t in "abcq"] == [
            "upstream_failed",
            "upstream_failed",
            "scheduled",
            "queued",
        ]
        assert ti_row(conn, ids["a"]).end_date == NOW
        assert journal(conn, mark) == [
            (ids["a"], "none", "upstream_failed", 0, ACTOR),
            (ids["b"], "none", "upstream_failed", 0, ACTOR),
        ]
        mark = journal_mark(conn)
        assert tis.set_state(conn, [view["r"]], _S.FAILED, actor=ACTOR, now=NOW) == [ids["r"]]
        assert journal(conn, mark) == [(ids["r"], "up_for_retry", "failed", 1, ACTOR)]
        assert tis.set_state(conn, [], _S.SKIPPED, actor=ACTOR, now=NOW) == []
        assert tis.set_state(conn, [view["a"]], _S.SKIPPED, actor=ACTOR, now=NOW) == []


def test_queue_starts_the_next_try_from_the_seen_state_and_try(engine: Engine) -> None:
    names = ["new", "retry", "resched", "stale_try", "stale_state", "running"]
    with engine.begin() as conn:
        bid, dag_run_ids = make_backfill(
            conn, tasks=[spec(n, queue=f"q_{n}", max_tries=2) for n in names], start=1
        )
        ids = ti_ids(conn, dag_run_ids[0])
        force(conn, ids["retry"], state=_S.UP_FOR_RETRY, try_number=1, next_try_at=NOW)
        force(conn, ids["resched"], state=_S.UP_FOR_RESCHEDULE, try_number=1, next_try_at=NOW)
        force(conn, ids["running"], state=_S.RUNNING, try_number=1, claim_token="tok")
        view = seen(conn, bid)
        force(conn, ids["stale_try"], try_number=3)  # same state, another try meanwhile
        force(conn, ids["stale_state"], state=_S.SKIPPED)
        mark = journal_mark(conn)
        queued = tis.queue(conn, list(view.values()), actor=ACTOR, now=NOW)
        assert sorted(queued, key=lambda q: q.id) == [
            tis.Queued(id=ids["new"], try_number=1, task_id="new", queue="q_new"),
            tis.Queued(id=ids["retry"], try_number=2, task_id="retry", queue="q_retry"),
            tis.Queued(id=ids["resched"], try_number=1, task_id="resched", queue="q_resched"),
        ]
        for name in ("new", "retry", "resched"):
            row = ti_row(conn, ids[name])
            assert (row.state, row.queued_at, row.next_try_at, row.claim_token) == (
                "queued",
                NOW,
                None,
                None,
            )
        assert ti_row(conn, ids["stale_try"]).state == "none"
        assert ti_row(conn, ids["stale_state"]).state == "skipped"
        assert (ti_row(conn, ids["running"]).state, ti_row(conn, ids["running"]).try_number) == (
            "running",
            1,
        )
        assert journal(conn, mark) == [
            (ids["new"], "none", "queued", 1, ACTOR),
            (ids["retry"], "up_for_retry", "queued", 2, ACTOR),
            (ids["resched"], "up_for_reschedule", "queued", 1, ACTOR),
        ]
        # Queueing the same view again changes nothing: every CAS misses.
        assert tis.queue(conn, list(view.values()), actor=ACTOR, now=NOW) == []
        assert tis.queue(conn, [], actor=ACTOR, now=NOW) == []


def test_queue_returns_the_queued_tis_in_the_order_given(engine: Engine) -> None:
    names = [f"t{i}" for i in range(8)]
    with engine.begin() as conn:
        bid, _ = make_backfill(conn, tasks=[spec(n) for n in names], start=1)
        view = seen(conn, bid)
        order = [view[n] for n in ["t5", "t0", "t7", "t2", "t6", "t1", "t4", "t3"]]
        queued = tis.queue(conn, order, actor=ACTOR, now=NOW)
    assert [q.task_id for q in queued] == [t.task_id for t in order]  # the dispatch order


def test_limit_counts_cover_every_backfill_and_dag(engine: Engine) -> None:
    with engine.begin() as conn:
        add_pool(conn, "p", 3)
        add_pool(conn, "unlimited", -1)
        d_tasks = [spec("a", pool="p", pool_slots=2), spec("b", pool="p"), spec("c"), spec("x")]
        _, d_runs = make_backfill(conn, tasks=d_tasks, start=1)
        _, d2_runs = make_backfill(conn, tasks=d_tasks, first=T0 + timedelta(days=10), start=1)
        _, e_runs = make_backfill(conn, dag_id="e", tasks=[spec("a", pool="p"), spec("z")])
        d, d2, e = (ti_ids(conn, r[0]) for r in (d_runs, d2_runs, e_runs))
        force(conn, d["a"], state=_S.QUEUED, try_number=1)  # p: 2 slots
        force(conn, d["b"], state=_S.RUNNING, try_number=1)  # p: 1
        force(conn, d["x"], state=_S.SUCCESS, try_number=1)  # finished: not counted
        force(conn, d2["c"], state=_S.RUNNING, try_number=1)  # default_pool, another backfill
        force(conn, d2["b"], state=_S.UP_FOR_RETRY, try_number=1)  # holds nothing
        force(conn, e["a"], state=_S.RUNNING, try_number=1)  # p: 1, another DAG
        force(conn, e["z"], state=_S.QUEUED, try_number=1)  # default_pool, another DAG
        tis.lock_limits(conn, "d", ["p", DEFAULT_POOL, "p"])
        counts = tis.limit_counts(conn, "d")
    assert counts.pool_slots == {"p": 4, DEFAULT_POOL: 2}
    assert counts.pool_sizes == {DEFAULT_POOL: schema.DEFAULT_POOL_SLOTS, "p": 3, "unlimited": -1}
    assert counts.task_active == {"a": 1, "b": 1, "c": 1}  # DAG e's "a" is not d's
    assert counts.dag_active == 3


def test_reap_stale_retries_or_fails_and_fences_the_lost_claim(engine: Engine) -> None:
    stale, fresh = NOW - timedelta(minutes=10), NOW - timedelta(seconds=5)
    cutoff = NOW - timedelta(minutes=1)
    tasks = [
        spec("retry", max_tries=1),
        spec("no_delay", max_tries=2),
        spec("last_try", max_tries=1),
        spec("no_retries"),
        spec("alive", max_tries=1),
        spec("queued", max_tries=1),
    ]
    with engine.begin() as conn:
        bid, dag_run_ids = make_backfill(conn, tasks=tasks, start=1)
        _, other_runs = make_backfill(conn, dag_id="e", tasks=[spec("retry", max_tries=1)], start=1)
        ids = ti_ids(conn, dag_run_ids[0])
        other = ti_ids(conn, other_runs[0])["retry"]
        tis.queue(conn, list(seen(conn, bid).values()), actor=ACTOR, now=stale)
        claimed = claims.claim(
            conn,
            ti_id=ids["retry"],
            try_number=1,
            token="t1",
            claimant="h:1",
            hostname="h",
            now=stale,
        )
        assert claimed is not None
        for name, beat in [("no_delay", stale), ("no_retries", stale), ("alive", fresh)]:
            force(conn, ids[name], state=_S.RUNNING, heartbeat_at=beat, claim_token="t")
        force(conn, ids["last_try"], state=_S.RUNNING, try_number=2, heartbeat_at=stale)
        force(conn, ids["queued"], heartbeat_at=stale)  # queued, not running: not reaped
        force(conn, other, state=_S.RUNNING, try_number=1, heartbeat_at=stale)
        mark = journal_mark(conn)
        delays = {"retry": timedelta(minutes=5), "last_try": timedelta(hours=1)}
        reaped = tis.reap_stale(
            conn, backfill_id=bid, cutoff=cutoff, retry_delays=delays, actor=ACTOR, now=NOW
        )
        assert sorted(reaped) == sorted(
            ids[n] for n in ["retry", "no_delay", "last_try", "no_retries"]
        )
        expect = {
            "retry": ("up_for_retry", NOW + timedelta(minutes=5)),
            "no_delay": ("up_for_retry", NOW),
            "last_try": ("failed", None),
            "no_retries": ("failed", None),
        }
        for name, (state, due) in expect.items():
            row = ti_row(conn, ids[name])
            assert (row.state, row.next_try_at, row.claim_token, row.end_date) == (
                state,
                due,
                None,
                NOW,
            ), name
            assert row.last_error is not None
        assert ti_row(conn, ids["alive"]).state == "running"
        assert ti_row(conn, ids["queued"]).state == "queued"
        assert ti_row(conn, other).state == "running"
        assert journal(conn, mark) == [
            (ids["retry"], "running", "up_for_retry", 1, ACTOR),
            (ids["no_delay"], "running", "up_for_retry", 1, ACTOR),
            (ids["last_try"], "running", "failed", 2, ACTOR),
            (ids["no_retries"], "running", "failed", 1, ACTOR),
        ]
        # The reaped worker's claim matches no row: it can neither heartbeat nor finish.
        assert not claims.heartbeat(conn, claimed, now=NOW)
        assert not claims.finish(conn, claimed, _S.SUCCESS, actor="worker:h:1", now=NOW)
        assert ti_row(conn, ids["retry"]).state == "up_for_retry"
        assert (
            tis.reap_stale(
                conn, backfill_id=bid, cutoff=cutoff, retry_delays={}, actor=ACTOR, now=NOW
            )
            == []
        )


def test_redispatch_lost_resends_old_queued_tis_for_the_same_try(engine: Engine) -> None:
    old, recent = NOW - timedelta(minutes=10), NOW - timedelta(seconds=5)
    cutoff = NOW - timedelta(minutes=2)
    tasks = [spec("lost", queue="q1"), spec("recent"), spec("running"), spec("retry", max_tries=1)]
    with engine.begin() as conn:
        bid, dag_run_ids = make_backfill(conn, tasks=tasks, start=1)
        _, other_runs = make_backfill(conn, dag_id="e", start=1)
        ids = ti_ids(conn, dag_run_ids[0])
        other = ti_ids(conn, other_runs[0])["a"]
        force(conn, ids["lost"], state=_S.QUEUED, try_number=2, queued_at=old)
        force(conn, ids["recent"], state=_S.QUEUED, try_number=1, queued_at=recent)
        force(conn, ids["running"], state=_S.RUNNING, try_number=1, queued_at=old)
        force(conn, ids["retry"], state=_S.UP_FOR_RETRY, try_number=1, queued_at=old)
        force(conn, other, state=_S.QUEUED, try_number=1, queued_at=old)
        mark = journal_mark(conn)
        again = tis.redispatch_lost(conn, backfill_id=bid, cutoff=cutoff, now=NOW)
        assert again == [tis.Queued(id=ids["lost"], try_number=2, task_id="lost", queue="q1")]
        lost = ti_row(conn, ids["lost"])
        assert (lost.state, lost.try_number, lost.queued_at) == ("queued", 2, NOW)
        assert ti_row(conn, ids["recent"]).queued_at == recent
        assert ti_row(conn, other).queued_at == old
        assert journal(conn, mark) == []  # not a state change
        assert tis.redispatch_lost(conn, backfill_id=bid, cutoff=cutoff, now=NOW) == []


# -- limits across coordinators ----------------------------------------------------


def _noop(ctx: object) -> None:
    """A task callable; the store tests never run it."""


def _contenders(engine: Engine, tag: str, shared: str) -> list[tuple[DAG, int]]:
    """Two backfills whose TIs compete for one slot: of a 1-slot pool shared by two
    DAGs, or of `max_active_tasks=1` of one DAG (tasks in different pools, so only
    the DAG's own lock can serialize them)."""
    start = pendulum.datetime(2024, 1, 1, tz="UTC")
    if shared == "pool":
        pair = [DAG(f"{n}_{tag}", schedule="@daily", start_date=start) for n in ("d", "e")]
        for dag in pair:
            dag.add_task("a", _noop, pool="one")
        entries = [(pair[0], spec("a", pool="one")), (pair[1], spec("a", pool="one"))]
    else:
        dag = DAG(f"d_{tag}", schedule="@daily", start_date=start, max_active_tasks=1)
        dag.add_task("a", _noop)
        dag.add_task("b", _noop, pool="big")
        entries = [(dag, spec("a")), (dag, spec("b", pool="big"))]
    out = []
    with engine.begin() as conn:
        for i, (dag, task) in enumerate(entries):
            first = T0 + timedelta(days=i)
            bid, _ = make_backfill(conn, dag_id=dag.dag_id, tasks=[task], first=first, start=1)
            out.append((dag, bid))
    return out


def _add_limit_pools(engine: Engine) -> None:
    with engine.begin() as conn:
        add_pool(conn, "one", 1)
        add_pool(conn, "big", 10)


def _queue_pass(
    conn: Connection, dag: DAG, backfill_id: int, *, counted: threading.Event | None = None
) -> int:
    """A coordinator's queueing step: plan from a snapshot, lock, recount, re-admit, queue."""
    view = pass_reads.read_snapshot(conn, backfill_id, tis.limit_counts(conn, dag.dag_id))
    tis.lock_limits(conn, dag.dag_id, sorted({t.pool for t in view.tis}))
    counts = tis.limit_counts(conn, dag.dag_id)
    if counted is not None:
        counted.set()
    admitted = admit(view.tis, dag, counts).admitted
    return len(tis.queue(conn, admitted, actor=f"coordinator:{dag.dag_id}", now=NOW))


def _active_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count()).where(ti_table.c.state == _S.QUEUED.value)
            ).scalar_one()
        )


@pytest.mark.parametrize("shared", ["pool", "max_active_tasks"])
def test_two_queuers_behind_a_barrier_never_overfill_a_limit(engine: Engine, shared: str) -> None:
    _add_limit_pools(engine)
    barrier = threading.Barrier(2)

    def contend(dag: DAG, backfill_id: int) -> int:
        with engine.connect() as conn:
            barrier.wait(timeout=30)
            with conn.begin():
                return _queue_pass(conn, dag, backfill_id)

    for rep in range(10):
        contenders = _contenders(engine, f"r{rep}", shared)
        with ThreadPoolExecutor(2) as pool:
            results = [f.result() for f in [pool.submit(contend, *c) for c in contenders]]
        assert sorted(results) == [0, 1], rep
        assert _active_count(engine) == 1, rep
        with engine.begin() as conn:  # free the slot for the next repetition
            queued = ti_table.c.state == _S.QUEUED.value
            force_state(conn, ti_table, queued, _S.SUCCESS, updated_at=NOW, updated_by="test")


@pytest.mark.postgres
@pytest.mark.parametrize("shared", ["pool", "max_active_tasks"])
def test_a_second_queuer_waits_for_the_first_to_commit(pg_url: str, shared: str) -> None:
    """Deterministic: the second queuer counts only after the first commits.

    The first holds its limits lock until it sees the second blocked on a lock
    (pg_stat_activity). Without the lock the second would count the slot as
    free and both would queue; the test then fails rather than hangs.
    """
    from backfill.store.db import create_engine_for

    engine = create_engine_for(pg_url)
    try:
        _add_limit_pools(engine)
        (first, first_bf), (second, second_bf) = _contenders(engine, "det", shared)
        first_counted, second_counted = threading.Event(), threading.Event()
        second_pid: list[int] = []

        def run_first() -> int:
            with engine.connect() as conn, conn.begin():
                queued = _queue_pass(conn, first, first_bf, counted=first_counted)
                _wait_blocked_or(engine, second_pid, second_counted)
                return queued

        def run_second() -> int:
            with engine.connect() as conn:
                second_pid.append(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
                conn.commit()  # end the autobegun transaction; the pass begins its own
                assert first_counted.wait(timeout=30)
                with conn.begin():
                    return _queue_pass(conn, second, second_bf, counted=second_counted)

        with ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(run_first), pool.submit(run_second)]
            assert [f.result() for f in futures] == [1, 0]
        assert _active_count(engine) == 1
    finally:
        engine.dispose()


def _wait_blocked_or(engine: Engine, pid: list[int], done: threading.Event) -> None:
    """Until the backend `pid` waits on a lock, or `done` is set; fail after 30 s."""
    deadline = time.monotonic() + 30
    with engine.connect() as conn:
        while time.monotonic() < deadline:
            if done.is_set():
                return
            if pid:
                wait = conn.exec_driver_sql(
                    f"SELECT wait_event_type FROM pg_stat_activity WHERE pid = {pid[0]}"
                ).scalar_one_or_none()
                if wait == "Lock":
                    return
            conn.rollback()  # a fresh snapshot of pg_stat_activity next time
            time.sleep(0.01)
    pytest.fail("the second queuer neither blocked nor counted within 30 s")


def test_a_coordinator_drives_active_backfills_and_cancelled_ones_not_wound_down(
    engine: Engine,
) -> None:
    states = {}
    with engine.begin() as conn:
        for n, state in enumerate(BackfillState):
            bid, dag_run_ids = make_backfill(conn, dag_id=f"d{n}", n_runs=2, start=1)
            bring_backfill_to(conn, bid, state)
            states[bid] = state
        wound_down, dag_run_ids = make_backfill(conn, dag_id="wound", n_runs=1, start=1)
        bring_backfill_to(conn, wound_down, BackfillState.CANCELLED)
        runs.finish_runs(conn, [(dag_run_ids[0], RunState.FAILED)], now=NOW)
        with statements(engine) as sql:
            wanted = status.needing_a_driver(conn)
    driven = {BackfillState.QUEUED, BackfillState.RUNNING, BackfillState.CANCELLED}
    assert wanted == {bid: f"d{n}" for n, (bid, s) in enumerate(states.items()) if s in driven}
    assert len(sql) == 1
    assert not any("task_instances" in s for s in sql)
