"""Results (`store.results`): written fenced on the claim, read only while `success`."""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass

import pendulum
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from support.factories import LOGICAL_DATE, queued_backfill

from backfill.model.states import TIState
from backfill.store import claims, results, runs
from backfill.store import clear as store_clear
from backfill.store.schema import ti_results

NOW = pendulum.datetime(2024, 6, 1, tz="UTC")


def _claim(engine: Engine, ti_id: int, try_number: int = 1) -> claims.Claim:
    with engine.begin() as conn:
        won = claims.claim(
            conn,
            ti_id=ti_id,
            try_number=try_number,
            token=uuid.uuid4().hex,
            claimant="test:1",
            hostname="testhost",
            now=NOW,
        )
    assert won is not None
    return won


def _finish(engine: Engine, claim: claims.Claim, outcome: TIState) -> None:
    with engine.begin() as conn:
        assert claims.finish(conn, claim, outcome, actor="worker:test", now=NOW)


@dataclass(frozen=True)
class _Seen:
    found: bool
    state: TIState | None
    value: str | None


def _upstream(engine: Engine, reader: int, task_id: str) -> _Seen:
    """What the reader's run holds of an unmapped task."""
    with engine.begin() as conn:
        rows = results.upstream(conn, reader, task_id)
    if not rows:
        return _Seen(False, None, None)
    [row] = rows
    return _Seen(True, row.state, row.value)


def test_a_result_is_fenced_and_read_only_while_its_ti_is_success(engine: Engine) -> None:
    q = queued_backfill(engine, dag_id="res", tasks={"up": 1, "down": 1})
    up, down = q.ti_ids["up"], q.ti_ids["down"]
    claim = _claim(engine, up)
    forged = dataclasses.replace(claim, token="not-the-claim")
    with engine.begin() as conn:
        assert not results.record(conn, forged, '{"x": 0}', now=NOW), "a lost claim writes"
        assert results.record(conn, claim, '{"x": 1}', now=NOW)
        assert results.record(conn, claim, '{"x": 1}', now=NOW), "a retry finds its own row"
        assert conn.execute(sa.select(sa.func.count()).select_from(ti_results)).scalar() == 1
    running = _upstream(engine, down, "up")
    assert (running.found, running.state, running.value) == (True, TIState.RUNNING, None)
    _finish(engine, claim, TIState.SUCCESS)
    assert _upstream(engine, down, "up").value == '{"x": 1}'
    assert not _upstream(engine, down, "nope").found


def test_a_cleared_ti_hides_its_old_result_until_a_new_try_succeeds(engine: Engine) -> None:
    q = queued_backfill(engine, dag_id="res", tasks={"up": 1, "down": 1})
    up, down = q.ti_ids["up"], q.ti_ids["down"]
    first = _claim(engine, up)
    with engine.begin() as conn:
        assert results.record(conn, first, '"old"', now=NOW)
    _finish(engine, first, TIState.SUCCESS)
    with engine.begin() as conn:
        row = runs.lock_backfill(conn, q.backfill_id)
        assert row is not None
        target = store_clear.Selected(
            ti_id=up,
            dag_run_id=q.dag_run_id,
            task_id="up",
            logical_date=LOGICAL_DATE,
            state=TIState.SUCCESS,
            try_number=1,
        )
        specs = {"up": runs.TaskSpec(task_id="up", pool="default_pool", pool_slots=1,
                                     queue="default", priority_weight=1, max_tries=1)}  # fmt: skip
        store_clear.clear(conn, row, [target], specs, actor="test", now=NOW)
    cleared = _upstream(engine, down, "up")
    assert (cleared.state, cleared.value) == (TIState.NONE, None)
    with engine.begin() as conn:  # as a coordinator would: queued for the next try
        conn.execute(
            sa.text("UPDATE task_instances SET state = 'queued', try_number = 2 WHERE id = :i"),
            {"i": up},
        )
    second = _claim(engine, up, try_number=2)
    _finish(engine, second, TIState.SUCCESS)  # returned nothing this time: no row
    rerun = _upstream(engine, down, "up")
    assert (rerun.state, rerun.value) == (TIState.SUCCESS, None)
