"""The claim (DESIGN 1.2): exactly one claimant wins a TI try, and a lost claim is fenced.

Real databases, both backends. The races use N separate engines (threads) or
N processes, each with its connection open before a barrier releases them
all at once onto the same TI try.
"""

from __future__ import annotations

import multiprocessing
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pendulum
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from backfill.model.states import TIState
from backfill.planning.snapshot import TIRow
from backfill.store import claims, runs, tis
from backfill.store.db import create_engine_for
from backfill.store.schema import task_instances, ti_transitions

N = 8  # claimants per race
ROUNDS = 20  # races per backend with threads
PROCESS_ROUNDS = 3  # races per backend with processes (spawning is slow)
BARRIER_TIMEOUT = 60.0
LOGICAL_DATE = pendulum.datetime(2024, 1, 1, tz="UTC")
COORDINATOR = "coordinator:test"


@dataclass(frozen=True)
class Setup:
    backfill_id: int
    ti_ids: list[int]


def _now() -> datetime:
    return pendulum.now("UTC")


def _queued(engine: Engine, count: int, *, max_tries: int = 1) -> Setup:
    """A backfill with one run of `count` tasks, every TI queued for try 1 by the store."""
    now = _now()
    specs = [
        runs.TaskSpec(
            task_id=f"t{i}",
            pool="default_pool",
            pool_slots=1,
            queue="default",
            priority_weight=1,
            max_tries=max_tries,
        )
        for i in range(count)
    ]
    with engine.begin() as conn:
        bf = runs.insert_backfill(
            conn,
            dag_id="race",
            fingerprint="f" * 16,
            start=LOGICAL_DATE,
            end=LOGICAL_DATE,
            options={},
            conf={},
            now=now,
        )
        new_run = runs.NewRun(
            run_id="backfill__2024-01-01",
            logical_date=LOGICAL_DATE,
            data_interval_start=LOGICAL_DATE,
            data_interval_end=LOGICAL_DATE + timedelta(days=1),
        )
        [run_pk] = runs.insert_runs(
            conn, backfill_id=bf, dag_id="race", runs=[new_run], tasks=specs, conf={}, now=now
        )
        rows = conn.execute(
            sa.select(task_instances.c.id, task_instances.c.task_id)
            .where(task_instances.c.dag_run_id == run_pk)
            .order_by(task_instances.c.id)
        ).all()
        # As a coordinator does: TIs are queued in a running run.
        runs.start_runs(conn, bf, 1, dag_id="race", limit=1_000, backwards=False, now=now)
        queued = tis.queue(
            conn, [_ti_row(r.id, run_pk, r.task_id) for r in rows], actor=COORDINATOR, now=now
        )
    assert [q.try_number for q in queued] == [1] * count
    return Setup(backfill_id=bf, ti_ids=[r.id for r in rows])


def _ti_row(
    ti_id: int, run_pk: int, task_id: str, *, state: TIState = TIState.NONE, try_number: int = 0
) -> TIRow:
    return TIRow(
        id=ti_id,
        dag_run_id=run_pk,
        task_id=task_id,
        state=state,
        try_number=try_number,
        max_tries=1,
        pool="default_pool",
        pool_slots=1,
        priority_weight=1,
    )


def _claim(conn: Connection, ti_id: int, try_number: int, claimant: str) -> claims.Claim | None:
    return claims.claim(
        conn,
        ti_id=ti_id,
        try_number=try_number,
        token=uuid.uuid4().hex,
        claimant=claimant,
        hostname="testhost",
        now=_now(),
    )


def _claim_in_tx(engine: Engine, ti_id: int, try_number: int, claimant: str) -> claims.Claim | None:
    with engine.begin() as conn:
        return _claim(conn, ti_id, try_number, claimant)


def _row(engine: Engine, ti_id: int) -> dict[str, Any]:
    with engine.connect() as conn:
        row = conn.execute(sa.select(task_instances).where(task_instances.c.id == ti_id)).one()
    return dict(row._mapping)


def _journal(engine: Engine, ti_id: int) -> list[tuple[str, str, int, str]]:
    j = ti_transitions
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(j.c.from_state, j.c.to_state, j.c.try_number, j.c.actor)
            .where(j.c.task_instance_id == ti_id)
            .order_by(j.c.id)
        ).all()
    return [tuple(r) for r in rows]


# -- the race ---------------------------------------------------------------------


def _race_threads(engines: list[Engine], ti_id: int) -> list[claims.Claim | None]:
    barrier = threading.Barrier(len(engines), timeout=BARRIER_TIMEOUT)

    def contend(i: int) -> claims.Claim | None:
        with engines[i].connect() as conn:  # connected before the barrier: a pure claim race
            barrier.wait()
            with conn.begin():
                return _claim(conn, ti_id, 1, f"thread-{i}")

    with ThreadPoolExecutor(max_workers=len(engines)) as pool:
        return list(pool.map(contend, range(len(engines))))


def test_exactly_one_of_n_threads_wins_each_try(db_url: str, engine: Engine) -> None:
    setup = _queued(engine, ROUNDS)
    engines = [create_engine_for(db_url) for _ in range(N)]
    try:
        for ti_id in setup.ti_ids:
            results = _race_threads(engines, ti_id)
            winners = [(i, c) for i, c in enumerate(results) if c is not None]
            assert len(winners) == 1, f"TI {ti_id}: {len(winners)} winners"
            [(i, won)] = winners
            row = _row(engine, ti_id)
            assert (row["state"], row["try_number"]) == ("running", 1)
            assert (row["claim_token"], row["claimant"]) == (won.token, f"thread-{i}")
            assert _journal(engine, ti_id) == [
                ("none", "queued", 1, COORDINATOR),
                ("queued", "running", 1, f"worker:thread-{i}"),
            ]
    finally:
        for eng in engines:
            eng.dispose()


def _contend_in_process(
    db_url: str,
    ti_ids: list[int],
    index: int,
    barrier: Any,
    results: Any,
) -> None:
    # Runs in a spawned process: its own interpreter, engine and connection.
    engine = create_engine_for(db_url)
    try:
        with engine.connect() as conn:
            for ti_id in ti_ids:
                barrier.wait(BARRIER_TIMEOUT)
                with conn.begin():
                    won = _claim(conn, ti_id, 1, f"process-{index}")
                results.put((ti_id, index, None if won is None else won.token))
    finally:
        engine.dispose()


def test_exactly_one_of_n_processes_wins_each_try(db_url: str, engine: Engine) -> None:
    setup = _queued(engine, PROCESS_ROUNDS)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(N)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_contend_in_process, args=(db_url, setup.ti_ids, i, barrier, results))
        for i in range(N)
    ]
    for proc in procs:
        proc.start()
    try:
        outcomes = [results.get(timeout=120) for _ in range(N * PROCESS_ROUNDS)]
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
    assert all(proc.exitcode == 0 for proc in procs)
    for ti_id in setup.ti_ids:
        winners = [(i, token) for t, i, token in outcomes if t == ti_id and token is not None]
        assert len(winners) == 1, f"TI {ti_id}: {len(winners)} winners"
        [(i, token)] = winners
        row = _row(engine, ti_id)
        assert (row["state"], row["claim_token"], row["claimant"]) == (
            "running",
            token,
            f"process-{i}",
        )


# -- fencing ------------------------------------------------------------------------


def test_a_claim_for_another_try_wins_nothing(engine: Engine) -> None:
    [ti_id] = _queued(engine, 1).ti_ids
    before = _row(engine, ti_id)
    for wrong_try in (0, 2, 3):
        assert _claim_in_tx(engine, ti_id, wrong_try, "w") is None
    assert _claim_in_tx(engine, ti_id + 1000, 1, "w") is None  # no such TI
    assert _row(engine, ti_id) == before
    assert _journal(engine, ti_id) == [("none", "queued", 1, COORDINATOR)]
    assert _claim_in_tx(engine, ti_id, 1, "w") is not None


def test_a_claim_carries_what_the_context_needs(engine: Engine) -> None:
    setup = _queued(engine, 1, max_tries=3)
    won = _claim_in_tx(engine, setup.ti_ids[0], 1, "w")
    assert won is not None
    assert (won.dag_id, won.task_id, won.run_id) == ("race", "t0", "backfill__2024-01-01")
    assert (won.try_number, won.max_tries, won.dag_fingerprint) == (1, 3, "f" * 16)
    assert won.logical_date == LOGICAL_DATE
    assert won.data_interval_end == LOGICAL_DATE + timedelta(days=1)
    assert won.conf == {}


def test_a_reaped_try_is_fenced_and_its_retry_is_a_new_claim(engine: Engine) -> None:
    setup = _queued(engine, 1)
    [ti_id] = setup.ti_ids
    old = _claim_in_tx(engine, ti_id, 1, "w1")
    assert old is not None
    with engine.begin() as conn:
        assert claims.heartbeat(conn, old, now=_now())
        reaped = tis.reap_stale(
            conn,
            backfill_id=setup.backfill_id,
            cutoff=_now() + timedelta(seconds=1),  # every running TI counts as stale
            retry_delays={},
            actor="coordinator:reaper",
            now=_now(),
        )
    assert reaped == [ti_id]
    after_reap = _row(engine, ti_id)
    assert (after_reap["state"], after_reap["claim_token"]) == ("up_for_retry", None)

    _assert_fenced(engine, old, expected=after_reap)

    with engine.begin() as conn:
        row = _ti_row(
            ti_id, after_reap["dag_run_id"], "t0", state=TIState.UP_FOR_RETRY, try_number=1
        )
        [requeued] = tis.queue(conn, [row], actor=COORDINATOR, now=_now())
    assert requeued.try_number == 2
    _assert_fenced(engine, old, expected=_row(engine, ti_id))
    assert _claim_in_tx(engine, ti_id, 1, "w1") is None  # the old try's message, redelivered

    new = _claim_in_tx(engine, ti_id, 2, "w2")
    assert new is not None
    _assert_fenced(engine, old, expected=_row(engine, ti_id))  # a running try, but not old's
    with engine.begin() as conn:
        assert claims.finish(conn, new, TIState.SUCCESS, actor="worker:w2", now=_now())
    assert _journal(engine, ti_id) == [
        ("none", "queued", 1, COORDINATOR),
        ("queued", "running", 1, "worker:w1"),
        ("running", "up_for_retry", 1, "coordinator:reaper"),
        ("up_for_retry", "queued", 2, COORDINATOR),
        ("queued", "running", 2, "worker:w2"),
        ("running", "success", 2, "worker:w2"),
    ]


def test_a_forged_token_is_fenced(engine: Engine) -> None:
    [ti_id] = _queued(engine, 1).ti_ids
    won = _claim_in_tx(engine, ti_id, 1, "w1")
    assert won is not None
    forged = claims.Claim(**{**won.__dict__, "token": uuid.uuid4().hex})
    _assert_fenced(engine, forged, expected=_row(engine, ti_id))
    with engine.begin() as conn:
        assert claims.finish(
            conn, won, TIState.UP_FOR_RETRY, actor="worker:w1", now=_now(), error="E: x"
        )
    row = _row(engine, ti_id)
    assert (row["state"], row["last_error"]) == ("up_for_retry", "E: x")
    _assert_fenced(engine, won, expected=row)  # a finished try is fenced too


def _assert_fenced(engine: Engine, stale: claims.Claim, *, expected: dict[str, Any]) -> None:
    """The stale claim's heartbeat and finish match no row and change nothing."""
    journal = _journal(engine, stale.ti_id)
    with engine.begin() as conn:
        assert not claims.heartbeat(conn, stale, now=_now())
        for outcome in (TIState.SUCCESS, TIState.FAILED):
            assert not claims.finish(conn, stale, outcome, actor="worker:stale", now=_now())
    assert _row(engine, stale.ti_id) == expected
    assert _journal(engine, stale.ti_id) == journal
