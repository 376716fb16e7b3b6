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
from datetime import datetime, timedelta
from typing import Any

import pendulum
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from support.factories import COORDINATOR, LOGICAL_DATE, Queued, queued_backfill, ti_row
from support.rows import journal, row_of

from backfill.model.states import TIState
from backfill.store import claims, clock, tis
from backfill.store.db import create_engine_for
from backfill.store.schema import RefusalKind, refused_writes

N = 8  # claimants per race
ROUNDS = 20  # races per backend with threads
PROCESS_ROUNDS = 3  # races per backend with processes (spawning is slow)
BARRIER_TIMEOUT = 60.0

MOVE = ("from_state", "to_state", "try_number", "actor")  # of a journal row


def _now() -> datetime:
    return pendulum.now("UTC")


def _queued(engine: Engine, count: int, *, max_tries: int = 1) -> Queued:
    """A backfill with one run of `count` tasks, every TI queued for try 1 by the store."""
    tasks = {f"t{i}": max_tries for i in range(count)}
    return queued_backfill(engine, dag_id="race", tasks=tasks)


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
        for ti_id in setup.ids:
            results = _race_threads(engines, ti_id)
            winners = [(i, c) for i, c in enumerate(results) if c is not None]
            assert len(winners) == 1, f"TI {ti_id}: {len(winners)} winners"
            [(i, won)] = winners
            row = row_of(engine, ti_id)
            assert (row["state"], row["try_number"]) == ("running", 1)
            assert (row["claim_token"], row["claimant"]) == (won.token, f"thread-{i}")
            assert journal(engine, ti_id, *MOVE) == [
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
        ctx.Process(target=_contend_in_process, args=(db_url, setup.ids, i, barrier, results))
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
    for ti_id in setup.ids:
        winners = [(i, token) for t, i, token in outcomes if t == ti_id and token is not None]
        assert len(winners) == 1, f"TI {ti_id}: {len(winners)} winners"
        [(i, token)] = winners
        row = row_of(engine, ti_id)
        assert (row["state"], row["claim_token"], row["claimant"]) == (
            "running",
            token,
            f"process-{i}",
        )


# -- fencing ------------------------------------------------------------------------


def test_a_claim_for_another_try_wins_nothing(engine: Engine) -> None:
    [ti_id] = _queued(engine, 1).ids
    before = row_of(engine, ti_id)
    for wrong_try in (0, 2, 3):
        assert _claim_in_tx(engine, ti_id, wrong_try, "w") is None
    assert _claim_in_tx(engine, ti_id + 1000, 1, "w") is None  # no such TI
    assert row_of(engine, ti_id) == before
    assert journal(engine, ti_id, *MOVE) == [("none", "queued", 1, COORDINATOR)]
    assert _claim_in_tx(engine, ti_id, 1, "w") is not None


def test_a_claim_carries_what_the_context_needs(engine: Engine) -> None:
    setup = _queued(engine, 1, max_tries=3)
    won = _claim_in_tx(engine, setup.ids[0], 1, "w")
    assert won is not None
    run_id = "backfill__2024-01-01T00:00:00+00:00"
    assert (won.dag_id, won.task_id, won.run_id) == ("race", "t0", run_id)
    assert (won.try_number, won.max_tries, won.dag_fingerprint) == (1, 3, "f" * 16)
    assert won.logical_date == LOGICAL_DATE
    assert won.data_interval_end == LOGICAL_DATE + timedelta(days=1)
    assert won.conf == {}


def test_a_claim_without_a_time_is_stamped_by_the_database_clock(engine: Engine) -> None:
    """PostgreSQL's `now()`; SQLite's callers share one machine's clock. Either way the
    claim hands its stamp back, for the worker to carry."""
    [ti_id] = _queued(engine, 1).ids
    with engine.begin() as conn:
        before = clock.read(conn)
        won = claims.claim(conn, ti_id=ti_id, try_number=1, token="t", claimant="w", hostname="h")
        claims.refuse(conn, ti_id=ti_id, try_number=1, kind=RefusalKind.CLAIM, claimant="w2")
    assert won is not None
    row = row_of(engine, ti_id)
    assert row["start_date"] == row["heartbeat_at"] == won.started_at
    with engine.connect() as conn:
        after = clock.read(conn)
        refused_at = conn.execute(sa.select(refused_writes.c.at)).scalar_one()
    assert before <= won.started_at <= refused_at <= after


def test_a_reaped_try_is_fenced_and_its_retry_is_a_new_claim(engine: Engine) -> None:
    setup = _queued(engine, 1)
    [ti_id] = setup.ids
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
    after_reap = row_of(engine, ti_id)
    assert (after_reap["state"], after_reap["claim_token"]) == ("up_for_retry", None)

    _assert_fenced(engine, old, expected=after_reap)

    with engine.begin() as conn:
        row = ti_row(
            ti_id, after_reap["dag_run_id"], "t0", state=TIState.UP_FOR_RETRY, try_number=1
        )
        [requeued] = tis.queue(conn, [row], actor=COORDINATOR, now=_now())
    assert requeued.try_number == 2
    _assert_fenced(engine, old, expected=row_of(engine, ti_id))
    assert _claim_in_tx(engine, ti_id, 1, "w1") is None  # the old try's message, redelivered

    new = _claim_in_tx(engine, ti_id, 2, "w2")
    assert new is not None
    _assert_fenced(engine, old, expected=row_of(engine, ti_id))  # a running try, but not old's
    with engine.begin() as conn:
        assert claims.finish(conn, new, TIState.SUCCESS, actor="worker:w2", now=_now())
    assert journal(engine, ti_id, *MOVE) == [
        ("none", "queued", 1, COORDINATOR),
        ("queued", "running", 1, "worker:w1"),
        ("running", "up_for_retry", 1, "coordinator:reaper"),
        ("up_for_retry", "queued", 2, COORDINATOR),
        ("queued", "running", 2, "worker:w2"),
        ("running", "success", 2, "worker:w2"),
    ]


def test_a_forged_token_is_fenced(engine: Engine) -> None:
    [ti_id] = _queued(engine, 1).ids
    won = _claim_in_tx(engine, ti_id, 1, "w1")
    assert won is not None
    forged = claims.Claim(**{**won.__dict__, "token": uuid.uuid4().hex})
    _assert_fenced(engine, forged, expected=row_of(engine, ti_id))
    with engine.begin() as conn:
        assert claims.finish(
            conn, won, TIState.UP_FOR_RETRY, actor="worker:w1", now=_now(), error="E: x"
        )
    row = row_of(engine, ti_id)
    assert (row["state"], row["last_error"]) == ("up_for_retry", "E: x")
    _assert_fenced(engine, won, expected=row)  # a finished try is fenced too


def _assert_fenced(engine: Engine, stale: claims.Claim, *, expected: dict[str, Any]) -> None:
    """The stale claim's heartbeat and finish match no row and change nothing."""
    moves = journal(engine, stale.ti_id, *MOVE)
    with engine.begin() as conn:
        assert not claims.heartbeat(conn, stale, now=_now())
        for outcome in (TIState.SUCCESS, TIState.FAILED):
            assert not claims.finish(conn, stale, outcome, actor="worker:stale", now=_now())
    assert row_of(engine, stale.ti_id) == expected
    assert journal(engine, stale.ti_id, *MOVE) == moves
