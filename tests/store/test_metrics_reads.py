"""The reads behind the Prometheus metrics (store), on SQLite and PostgreSQL, and the
dispatch-lag watermark over them (`backfill.engine.dispatch_lag`).

What must hold: the TI gauge lists every backfill not ended and those ended within
the window, with every state (zeros included), and no other; refusals are counted
by kind; a claim's lag runs from its TI's `-> queued` journal row to its claim; the
lag reads are bounded by journal ids and by backfill, and observe each claim once,
also one whose commit lands after a later claim's (PostgreSQL).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import pendulum
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from support.factories import queued_backfill

from backfill.engine import dispatch_lag
from backfill.engine.dispatch_lag import DispatchLag
from backfill.model.states import BackfillState, TIState
from backfill.store import claims, metrics_reads, reads, runs
from backfill.store.schema import RefusalKind
from backfill.store.schema import ti_transitions as journal

NOW = pendulum.now("UTC")


def _claim(conn: Connection, ti_id: int, *, at: datetime) -> None:
    won = claims.claim(
        conn,
        ti_id=ti_id,
        try_number=1,
        token=uuid.uuid4().hex,
        claimant="test:1",
        hostname="test",
        now=at,
    )
    assert won is not None


def _ended(engine: Engine, dag_id: str, *, at: datetime) -> int:
    """A backfill of one TI, cancelled at `at`; its id."""
    backfill_id = queued_backfill(engine, dag_id=dag_id, tasks={"t": 1}).backfill_id
    with engine.begin() as conn:
        assert runs.set_backfill_state(conn, backfill_id, BackfillState.CANCELLED, now=at)
    return backfill_id


def test_task_instance_counts_list_live_and_recently_ended_backfills(engine: Engine) -> None:
    live = queued_backfill(engine, dag_id="live", tasks={"a": 1, "b": 1})
    with engine.begin() as conn:
        _claim(conn, live.ti_ids["a"], at=NOW)
        empty = runs.insert_backfill(
            conn, dag_id="empty", fingerprint="f", start=NOW, end=NOW, options={}, conf={}, now=NOW
        )
    recent = _ended(engine, "recent", at=NOW - timedelta(minutes=10))
    _ended(engine, "old", at=NOW - timedelta(hours=2))

    with reads.reading(engine) as conn:
        found = metrics_reads.task_instance_counts(conn, ended_since=NOW - timedelta(hours=1))

    listed = {(b.backfill_id, b.dag_id): b.task_instances for b in found}
    assert list(listed) == [(live.backfill_id, "live"), (empty, "empty"), (recent, "recent")]
    zeros = dict.fromkeys(TIState, 0)
    assert listed[(live.backfill_id, "live")] == zeros | {TIState.QUEUED: 1, TIState.RUNNING: 1}
    assert listed[(empty, "empty")] == zeros
    assert listed[(recent, "recent")] == zeros | {TIState.QUEUED: 1}  # as cancel left it


def test_refusal_counts_every_kind(engine: Engine) -> None:
    ti_id = queued_backfill(engine, dag_id="refused", tasks={"a": 1}).ids[0]
    with reads.reading(engine) as conn:
        assert metrics_reads.refusal_counts(conn) == dict.fromkeys(RefusalKind, 0)
    with engine.begin() as conn:
        for kind in (RefusalKind.CLAIM, RefusalKind.CLAIM, RefusalKind.FINISH):
            claims.refuse(conn, ti_id=ti_id, try_number=1, kind=kind, claimant="h:1", now=NOW)
    with reads.reading(engine) as conn:
        assert metrics_reads.refusal_counts(conn) == {
            RefusalKind.CLAIM: 2,
            RefusalKind.HEARTBEAT: 0,
            RefusalKind.FINISH: 1,
        }


def test_claims_between_reads_one_backfills_claims_in_an_id_range(engine: Engine) -> None:
    ours = queued_backfill(engine, dag_id="ours", tasks={"a": 1, "b": 1, "c": 1})
    theirs = queued_backfill(engine, dag_id="theirs", tasks={"x": 1})
    with reads.reading(engine) as conn:
        before = metrics_reads.last_transition_id(conn)
        queued_at = _queued_at(conn, ours.ti_ids["a"])
    with engine.begin() as conn:
        _claim(conn, ours.ti_ids["a"], at=queued_at + timedelta(seconds=3))
        _claim(conn, theirs.ti_ids["x"], at=queued_at + timedelta(seconds=4))
        _claim(conn, ours.ti_ids["b"], at=queued_at + timedelta(seconds=5))
        middle = metrics_reads.last_transition_id(conn)
        _claim(conn, ours.ti_ids["c"], at=queued_at + timedelta(seconds=6))
    with reads.reading(engine) as conn:
        top = metrics_reads.last_transition_id(conn)
        read = metrics_reads.claims_between
        every = read(conn, ours.backfill_id, after=before, upto=top, limit=10)
        assert [_lag(c) for c in every] == [3.0, 5.0, 6.0]  # not theirs
        assert [c.journal_id for c in every] == sorted(c.journal_id for c in every)
        assert read(conn, ours.backfill_id, after=before, upto=middle, limit=10) == every[:2]
        assert read(conn, ours.backfill_id, after=every[0].journal_id, upto=top, limit=1) == [
            every[1]
        ]
        assert read(conn, ours.backfill_id, after=top, upto=top + 100, limit=10) == []


def _queued_at(conn: Connection, ti_id: int) -> datetime:
    """When the TI's `-> queued` journal row says it was queued."""
    stmt = sa.select(journal.c.at).where(
        journal.c.task_instance_id == ti_id, journal.c.to_state == TIState.QUEUED.value
    )
    at: datetime = conn.execute(stmt).scalar_one()
    return at


def _lag(claim: metrics_reads.Claimed) -> float:
    assert claim.queued_at is not None
    return (claim.claimed_at - claim.queued_at).total_seconds()


def _look(engine: Engine, lag: DispatchLag) -> tuple[float, ...]:
    with reads.reading(engine) as conn:
        look = lag.read(conn)
    lag.advance(look)
    return look.lags


def test_dispatch_lag_observes_each_claim_once_from_its_first_look(engine: Engine) -> None:
    queued = queued_backfill(engine, dag_id="lag", tasks={"a": 1, "b": 1})
    with engine.begin() as conn:
        _claim(conn, queued.ti_ids["a"], at=NOW)  # before the first look: not observed
    lag = DispatchLag(queued.backfill_id)
    assert _look(engine, lag) == ()
    with engine.connect() as conn:
        queued_at = _queued_at(conn, queued.ti_ids["b"])
    with engine.begin() as conn:
        _claim(conn, queued.ti_ids["b"], at=queued_at + timedelta(seconds=2))
    assert _look(engine, lag) == (2.0,)
    assert _look(engine, lag) == ()  # read again in the overlap, observed once
    assert _look(engine, lag) == ()


def test_dispatch_lag_drains_a_backlog_a_batch_per_look(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dispatch_lag, "LOOK_LIMIT", 2)
    queued = queued_backfill(engine, dag_id="backlog", tasks=dict.fromkeys("abcde", 1))
    lag = DispatchLag(queued.backfill_id)
    assert _look(engine, lag) == ()
    with engine.begin() as conn:
        for ti_id in queued.ids:
            _claim(conn, ti_id, at=NOW + timedelta(seconds=1))
    looks = [len(_look(engine, lag)) for _ in range(5)]
    assert looks == [2, 2, 1, 0, 0]


@pytest.mark.postgres
def test_dispatch_lag_observes_a_claim_committed_after_a_later_one(pg_engine: Engine) -> None:
    """Journal ids are not handed out in commit order: the claim holding the lower id
    commits after a look saw the higher one; the next look still observes it, once."""
    queued = queued_backfill(pg_engine, dag_id="late", tasks={"a": 1, "b": 1})
    lag = DispatchLag(queued.backfill_id)
    assert _look(pg_engine, lag) == ()
    with pg_engine.connect() as late:
        late.begin()
        _claim(late, queued.ti_ids["a"], at=NOW)  # takes the lower journal id, uncommitted
        with pg_engine.begin() as conn:
            _claim(conn, queued.ti_ids["b"], at=NOW)
        assert len(_look(pg_engine, lag)) == 1  # b's
        late.commit()
    assert len(_look(pg_engine, lag)) == 1  # a's, in the overlap
    assert _look(pg_engine, lag) == ()
