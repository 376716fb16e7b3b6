"""`backfill pools set|list|delete`: upsert and delete rules, occupancy, bad input.

Every test runs on SQLite and PostgreSQL through the CLI; the last one proves
on PostgreSQL that a delete cannot slip past a coordinator queueing into the
pool (the lock taken by `store.pools.delete`).
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from support.cli import assert_user_error, invoke
from support.states import force_state

from backfill.model.states import TIState
from backfill.store import pools as pool_store
from backfill.store import runs, tis
from backfill.store.db import create_engine_for
from backfill.store.errors import PoolError
from backfill.store.runs import NewRun, TaskSpec
from backfill.store.schema import pools, task_instances

T0 = datetime(2024, 1, 1, tzinfo=UTC)
DEFAULT = {
    "name": "default_pool",
    "slots": 128,
    "description": "Default pool",
    "queued_slots": 0,
    "running_slots": 0,
    "occupied_slots": 0,
    "open_slots": 128,
}


def listed(home: Path, db_url: str | None = None) -> dict[str, dict[str, Any]]:
    result = invoke(home, "pools", "list", "--output", "json", db_url=db_url)
    assert result.exit_code == 0, result.output
    return {row["name"]: row for row in json.loads(result.stdout)}


def seed_tis(conn: Connection, pool_of: dict[str, tuple[str, int]]) -> None:
    """One run of DAG `d` with a TI per task: task_id -> (pool, pool_slots)."""
    backfill_id = runs.insert_backfill(
        conn, dag_id="d", fingerprint="f" * 64, start=T0, end=T0, options={}, conf={}, now=T0
    )
    tasks = [
        TaskSpec(task_id=t, pool=p, pool_slots=s, queue="default", priority_weight=1, max_tries=0)
        for t, (p, s) in pool_of.items()
    ]
    new_run = NewRun(
        run_id="backfill__1", logical_date=T0, data_interval_start=T0, data_interval_end=T0
    )
    runs.insert_runs(
        conn, backfill_id=backfill_id, dag_id="d", runs=[new_run], tasks=tasks, conf={}, now=T0
    )


def set_state(conn: Connection, task_id: str, state: str) -> None:
    where = task_instances.c.task_id == task_id
    force_state(conn, task_instances, where, TIState(state), updated_at=T0, updated_by="test")


def test_a_fresh_database_has_the_default_pool(home: Path, db_url: str) -> None:
    assert listed(home, db_url) == {"default_pool": DEFAULT}


def test_set_creates_then_updates(home: Path, db_url: str) -> None:
    result = invoke(
        home, "pools", "set", "db", "4", "--description", "the warehouse", db_url=db_url
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "pool db set to 4 slots"
    assert listed(home, db_url)["db"] == {
        "name": "db", "slots": 4, "description": "the warehouse", "queued_slots": 0,
        "running_slots": 0, "occupied_slots": 0, "open_slots": 4,
    }  # fmt: skip
    # Without --description an update keeps the description; with one it replaces it.
    assert invoke(home, "pools", "set", "db", "0", db_url=db_url).exit_code == 0
    assert (listed(home, db_url)["db"]["slots"], listed(home, db_url)["db"]["description"]) == (
        0,
        "the warehouse",
    )
    assert invoke(home, "pools", "set", "db", "7", "-d", "", db_url=db_url).exit_code == 0
    assert listed(home, db_url)["db"]["description"] == ""
    # The default pool can be resized like any other.
    assert invoke(home, "pools", "set", "default_pool", "2", db_url=db_url).exit_code == 0
    assert listed(home, db_url)["default_pool"]["slots"] == 2
    assert sorted(listed(home, db_url)) == ["db", "default_pool"]


@pytest.mark.parametrize("unlimited", ["-1", "unlimited"])
def test_set_unlimited(home: Path, db_url: str, unlimited: str) -> None:
    result = invoke(home, "pools", "set", "big", unlimited, db_url=db_url)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "pool big set to unlimited slots"
    row = listed(home, db_url)["big"]
    assert (row["slots"], row["open_slots"]) == (-1, None)
    table = invoke(home, "pools", "list", db_url=db_url).stdout
    line = next(ln for ln in table.splitlines() if " big " in ln)
    assert "unlimited" in line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["bad name", "3"], "a pool name must be 1 to 250 letters"),
        (["a/b", "3"], "got 'a/b'"),
        (["x" * 251, "3"], "a pool name must be 1 to 250"),
        (["", "3"], "a pool name must be"),
        (["p", "-2"], "pool slots must be a number from 0 to 2147483647, or -1"),
        (["p", "2147483648"], "pool slots must be a number from 0 to 2147483647"),
        (["p", "many"], "'many' is not a number of slots"),
        (["p"], "Missing argument 'SLOTS'"),
        (["p", "3", "--bogus"], "unexpected extra argument (--bogus)"),
    ],
)
def test_set_bad_input_writes_nothing(
    home: Path, db_url: str, args: list[str], message: str
) -> None:
    assert_user_error(invoke(home, "pools", "set", *args, db_url=db_url), message)
    assert listed(home, db_url) == {"default_pool": DEFAULT}


def test_bad_input_never_creates_the_embedded_database(home: Path) -> None:
    assert_user_error(invoke(home, "pools", "set", "bad name", "1"), "a pool name")
    assert_user_error(invoke(home, "pools", "set", "p", "-5"), "pool slots")
    assert_user_error(invoke(home, "pools", "delete", "p"), "no pool named 'p'")
    assert_user_error(invoke(home, "pools", "delete", "default_pool"), "cannot be deleted")
    assert json.loads(invoke(home, "pools", "list", "-o", "json").stdout) == []
    assert "no pools yet" in invoke(home, "pools", "list").stdout
    assert not home.exists()
    # A valid `set` is the one that creates (and migrates) it.
    assert invoke(home, "pools", "set", "p", "3").exit_code == 0
    assert (home / "backfill.db").exists()
    assert sorted(listed(home)) == ["default_pool", "p"]


def test_pools_on_a_database_without_schema(home: Path, backend: str, empty_db_url: str) -> None:
    if backend == "sqlite":  # a missing file: only `set` creates and migrates it
        path = Path(sa.make_url(empty_db_url).database or "")
        assert_user_error(invoke(home, "pools", "delete", "p", db_url=empty_db_url), "no pool")
        assert not path.exists()
        assert invoke(home, "pools", "set", "p", "1", db_url=empty_db_url).exit_code == 0
        assert sorted(listed(home, empty_db_url)) == ["default_pool", "p"]
        return
    for args in (["set", "p", "1"], ["list"], ["delete", "p"]):
        assert_user_error(
            invoke(home, "pools", *args, db_url=empty_db_url),
            "has no Backfill schema; run `backfill db migrate`",
        )


def test_occupancy_counts_slots_of_queued_and_running_tis(
    home: Path, db_url: str, engine: Engine
) -> None:
    assert invoke(home, "pools", "set", "db", "10", db_url=db_url).exit_code == 0
    slots = {"q": ("db", 2), "r": ("db", 3), "ok": ("db", 4), "n": ("db", 1), "other": ("x", 5)}
    with engine.begin() as conn:
        seed_tis(conn, slots)
        set_state(conn, "q", "queued")
        set_state(conn, "r", "running")
        set_state(conn, "ok", "success")
        set_state(conn, "other", "running")  # a pool that does not exist: not listed
    db = listed(home, db_url)["db"]
    assert (db["queued_slots"], db["running_slots"], db["occupied_slots"], db["open_slots"]) == (
        2,
        3,
        5,
        5,
    )
    assert listed(home, db_url)["default_pool"] == DEFAULT
    assert sorted(listed(home, db_url)) == ["db", "default_pool"]
    # Shrunk below its occupancy: nothing is open, never a negative number.
    assert invoke(home, "pools", "set", "db", "1", db_url=db_url).exit_code == 0
    assert listed(home, db_url)["db"]["open_slots"] == 0
    table = invoke(home, "pools", "list", db_url=db_url).stdout
    line = next(ln for ln in table.splitlines() if " db " in ln)
    assert [c.strip() for c in line.strip("│ ").split("│")][:5] == ["db", "1", "2", "3", "0"]


def test_delete_rules(home: Path, db_url: str, engine: Engine) -> None:
    assert invoke(home, "pools", "set", "db", "10", db_url=db_url).exit_code == 0
    with engine.begin() as conn:
        seed_tis(conn, {"q": ("db", 2), "r": ("db", 1), "ok": ("db", 1)})
        set_state(conn, "q", "queued")
        set_state(conn, "r", "running")
        set_state(conn, "ok", "success")
    assert_user_error(
        invoke(home, "pools", "delete", "default_pool", db_url=db_url),
        "default_pool cannot be deleted",
        "backfill pools set default_pool SLOTS",
    )
    assert_user_error(
        invoke(home, "pools", "delete", "nope", db_url=db_url),
        "no pool named 'nope'; see `backfill pools list`",
    )
    assert_user_error(
        invoke(home, "pools", "delete", "db", db_url=db_url),
        "pool 'db' is in use by 2 queued or running task instances",
    )
    assert sorted(listed(home, db_url)) == ["db", "default_pool"]
    with engine.begin() as conn:
        set_state(conn, "q", "failed")
    assert_user_error(
        invoke(home, "pools", "delete", "db", db_url=db_url),
        "in use by 1 queued or running task instance;",
    )
    with engine.begin() as conn:
        set_state(conn, "r", "success")
    result = invoke(home, "pools", "delete", "db", db_url=db_url)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "pool db deleted"
    assert listed(home, db_url) == {"default_pool": DEFAULT}
    assert_user_error(invoke(home, "pools", "delete", "db", db_url=db_url), "no pool named 'db'")


def test_missing_names_the_unknown_pools(engine: Engine) -> None:
    with engine.begin() as conn:
        pool_store.upsert(conn, "db", 3)
        assert pool_store.missing(conn, ["db", "gpu", "default_pool", "a", "gpu"]) == ["a", "gpu"]
        assert pool_store.missing(conn, []) == []


def _waiting_on_a_lock(admin: Engine, deadline: float) -> None:
    """Return once another session of this database waits on a lock (or fail at deadline)."""
    query = sa.text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    while time.monotonic() < deadline:
        with admin.connect() as conn:
            if conn.execute(query).scalar_one() > 0:
                return
        time.sleep(0.01)
    pytest.fail("the delete never waited for the queueing transaction's lock")


def test_delete_cannot_slip_past_a_queueing_pass(pg_url: str) -> None:
    """A coordinator holds the pool (lock_limits) and queues a TI into it; a concurrent
    delete must wait for it and then see the TI. (A bare DELETE ... WHERE NOT EXISTS
    would read the TI as not queued from its snapshot and delete the pool anyway.)"""
    engine = create_engine_for(pg_url)
    try:
        with engine.begin() as conn:
            pool_store.upsert(conn, "db", 4)
            seed_tis(conn, {"t": ("db", 1)})
        outcome: list[BaseException | None] = []

        def delete() -> None:
            try:
                with engine.begin() as conn:
                    pool_store.delete(conn, "db")
            except PoolError as exc:
                outcome.append(exc)
            else:
                outcome.append(None)

        with engine.connect() as coordinator:
            with coordinator.begin():
                tis.lock_limits(coordinator, "d", ["db"])
                set_state(coordinator, "t", "queued")
                worker = threading.Thread(target=delete)
                worker.start()
                _waiting_on_a_lock(engine, time.monotonic() + 20)
            worker.join(timeout=20)
        assert not worker.is_alive()
        assert len(outcome) == 1
        assert outcome[0] is not None, "the pool was deleted under a queued TI"
        assert "in use by 1 queued or running task instance" in str(outcome[0])
        with engine.connect() as conn:
            assert conn.execute(sa.select(pools.c.name).where(pools.c.name == "db")).scalar()
    finally:
        engine.dispose()
