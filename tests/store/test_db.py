"""Engines, locking and schema checks of `backfill.store.db`, on real SQLite and PostgreSQL."""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from backfill.config import Settings
from backfill.errors import ConfigError
from backfill.store import schema
from backfill.store.db import (
    SCHEMA_HEAD,
    create_engine_for,
    head_revision,
    migrate,
    open_engine,
    require_current_schema,
    schema_revision,
)

SQLITE_ONLY = pytest.mark.parametrize("backend", ["sqlite"])
POSTGRES_ONLY = pytest.mark.parametrize(
    "backend", [pytest.param("postgresql", marks=pytest.mark.postgres)]
)
FAKE_PASSWORD = "s3cret-pw"  # trust auth ignores it; it must never be printed


def _run_together(n: int, work: Callable[[], None]) -> list[BaseException]:
    """Run `work` in `n` threads released at once by a barrier; return their errors."""
    barrier = threading.Barrier(n, timeout=30)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            barrier.wait()
            work()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a thread is stuck"
    return errors


# -- SQLite engine ---------------------------------------------------------------


@SQLITE_ONLY
def test_sqlite_engine_uses_wal_busy_timeout_and_foreign_keys(engine: Engine) -> None:
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_foreign_keys_are_enforced(engine: Engine) -> None:
    orphan = {"dag_run_id": 12345, "dag_id": "d", "task_id": "t", "pool": "p", "queue": "q"}
    insert = schema.task_instances.insert().values(**orphan, updated_at=datetime.now(UTC))
    with engine.begin() as conn, pytest.raises(sa.exc.IntegrityError, match=r"(?i)foreign key"):
        conn.execute(insert)


@SQLITE_ONLY
def test_sqlite_transaction_takes_the_write_lock_when_it_begins(engine: Engine) -> None:
    path = make_url(str(engine.url)).database
    assert path is not None
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        # No statement yet: BEGIN IMMEDIATE alone holds the lock.
        with engine.begin(), pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
        # A deferred (read-only) transaction takes no lock until it writes.
        with engine.connect().execution_options(sqlite_begin="DEFERRED") as conn, conn.begin():
            conn.execute(sa.select(schema.pools.c.slots)).all()
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
    finally:
        other.close()


@SQLITE_ONLY
def test_sqlite_autocommit_use_leaves_no_transaction_and_no_legacy_mode(engine: Engine) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(schema.pools.update().values(description="x"))
        assert not conn.connection.dbapi_connection.in_transaction  # type: ignore[union-attr]
    # The pool reset the driver to its legacy mode; the next checkout undoes it.
    with engine.connect() as conn:
        assert conn.connection.dbapi_connection.isolation_level is None  # type: ignore[union-attr]


@SQLITE_ONLY
def test_sqlite_concurrent_writers_wait_instead_of_deadlocking(engine: Engine) -> None:
    # Each transaction reads then writes: with a deferred BEGIN two of them
    # would both hold a read snapshot and one would fail "database is locked".
    rounds = 25
    pool = schema.pools.c

    def increment() -> None:
        for _ in range(rounds):
            with engine.begin() as conn:
                slots = conn.execute(
                    sa.select(pool.slots).where(pool.name == "default_pool")
                ).scalar_one()
                conn.execute(
                    schema.pools.update().where(pool.name == "default_pool").values(slots=slots + 1)
                )

    assert _run_together(2, increment) == []
    with engine.connect() as conn:
        final = conn.execute(sa.select(pool.slots).where(pool.name == "default_pool")).scalar()
    assert final == schema.DEFAULT_POOL_SLOTS + 2 * rounds  # no lost update either


# -- PostgreSQL engine -----------------------------------------------------------


@POSTGRES_ONLY
def test_postgres_engine_settings(engine: Engine) -> None:
    assert engine.dialect.driver == "psycopg2"
    assert engine.pool.size() == 5  # type: ignore[attr-defined]
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SHOW application_name").scalar() == "backfill"


def test_unsupported_database_is_refused_without_its_password() -> None:
    with pytest.raises(ConfigError, match=r"unsupported database 'mysql://u:\*\*\*@h/db'") as info:
        create_engine_for(f"mysql://u:{FAKE_PASSWORD}@h/db")
    assert FAKE_PASSWORD not in str(info.value)


# -- migrate / schema checks -----------------------------------------------------


def test_concurrent_migrations_both_succeed(empty_db_url: str) -> None:
    engine = create_engine_for(empty_db_url)
    try:
        assert _run_together(2, lambda: migrate(engine)) == []
        assert schema_revision(engine) == head_revision()
        with engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(schema.pools)).scalar() == 1
    finally:
        engine.dispose()


def test_revision_from_a_newer_backfill_is_refused(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = 'abc123'")
    expected = (
        "is at schema revision 'abc123', which this version of backfill does not know "
        f"(it expects '{head_revision()}'); upgrade backfill"
    )
    with pytest.raises(ConfigError, match=re.escape(expected)):
        require_current_schema(engine)
    with pytest.raises(ConfigError, match=r"cannot migrate the database at .*'abc123'"):
        migrate(engine)


# -- open_engine -----------------------------------------------------------------


def _embedded(tmp_path: Path) -> Settings:
    return Settings.from_env({"BACKFILL_HOME": str(tmp_path / "home")})


def test_read_only_open_of_missing_embedded_db_creates_nothing(tmp_path: Path) -> None:
    settings = _embedded(tmp_path)
    assert open_engine(settings, create=False) is None
    assert not settings.home.exists()


def test_embedded_db_migrates_itself_on_first_use(tmp_path: Path) -> None:
    settings = _embedded(tmp_path)
    engine = open_engine(settings, create=True)
    assert engine is not None
    try:
        assert (settings.home / "backfill.db").is_file()
        assert schema_revision(engine) == head_revision()
    finally:
        engine.dispose()
    for create in (True, False):  # opening it again neither fails nor migrates twice
        again = open_engine(settings, create=create)
        assert again is not None
        with again.connect() as conn:
            assert conn.execute(sa.select(schema.pools.c.name)).scalars().all() == ["default_pool"]
        again.dispose()


def test_read_only_open_of_unmigrated_embedded_db_sees_nothing(tmp_path: Path) -> None:
    # Another process may have just created the file and not migrated it yet
    # (e.g. `backfill coordinator` starting while `backfill create` plans).
    settings = _embedded(tmp_path)
    settings.home.mkdir()
    sqlite3.connect(settings.home / "backfill.db").close()  # an empty database file
    assert open_engine(settings, create=False) is None
    with sqlite3.connect(settings.home / "backfill.db") as conn:
        assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone() == (0,)


def _with_password(url: str) -> str:
    return make_url(url).set(password=FAKE_PASSWORD).render_as_string(hide_password=False)


@POSTGRES_ONLY
@pytest.mark.parametrize("create", [True, False])
def test_postgres_without_schema_is_never_migrated(
    empty_db_url: str, tmp_path: Path, create: bool
) -> None:
    url = _with_password(empty_db_url)
    settings = Settings.from_env({"BACKFILL_HOME": str(tmp_path), "BACKFILL_DATABASE_URL": url})
    with pytest.raises(ConfigError) as info:
        open_engine(settings, create=create)
    message = str(info.value)
    assert FAKE_PASSWORD not in message
    redacted = make_url(url).render_as_string(hide_password=True)
    assert message == (
        f"the database at {redacted} has no Backfill schema; run `backfill db migrate`"
    )
    assert ":***@" in message
    check = create_engine_for(empty_db_url)
    try:
        assert sa.inspect(check).get_table_names() == []
    finally:
        check.dispose()


def test_postgres_at_head_opens(pg_url: str, tmp_path: Path) -> None:
    url = _with_password(pg_url)
    settings = Settings.from_env({"BACKFILL_HOME": str(tmp_path), "BACKFILL_DATABASE_URL": url})
    engine = open_engine(settings, create=False)
    assert engine is not None
    try:
        assert schema_revision(engine) == head_revision()
    finally:
        engine.dispose()


def test_the_schema_head_the_commands_expect_is_the_newest_migration() -> None:
    # Every command checks the revision against SCHEMA_HEAD without importing Alembic.
    assert head_revision() == SCHEMA_HEAD
