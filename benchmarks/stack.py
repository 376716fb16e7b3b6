"""The bench's servers: a fresh PostgreSQL database, a Redis DB index, the embedded home.

Invariants:
- each PostgreSQL database is created for the bench (`backfill_bench_<random>`),
  migrated, given an unlimited `default_pool` (limits are not what is
  measured), and dropped at the end even if the bench failed;
- the embedded home (SQLite + `filesystem://` broker) is a folder emptied
  before use, its database migrated with the same unlimited `default_pool`;
- the Redis DB index is an empty one, marked with the owner key the test
  suite uses (`backfill-it:owner`), so a concurrent test run never takes it;
  at the end it is emptied with FLUSHDB of that index only, if still ours.
The workers are `benchmarks.fleet`'s.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from backfill.config import Settings, redact
from backfill.model.task_options import DEFAULT_POOL
from backfill.store import pools
from backfill.store.db import create_engine_for, migrate

PG_ADMIN_URL = os.environ.get(
    "BACKFILL_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("BACKFILL_TEST_REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")
OWNER_KEY = "backfill-it:owner"  # the test suite's mark of a taken Redis DB index
DAGS_FOLDER = Path(__file__).parent / "dags"


class BenchSetupError(RuntimeError):
    """A server the bench needs is missing or busy."""


@contextmanager
def pg_database() -> Iterator[str]:
    """The URL of a fresh, migrated database with an unlimited default pool; dropped after."""
    admin = create_engine_for(PG_ADMIN_URL).execution_options(isolation_level="AUTOCOMMIT")
    name = f"backfill_bench_{uuid.uuid4().hex[:12]}"
    try:
        _admin(admin, f'CREATE DATABASE "{name}"')
    except sa.exc.OperationalError as exc:
        admin.dispose()
        raise BenchSetupError(
            f"PostgreSQL at {redact(PG_ADMIN_URL)} does not answer; start it or set "
            f"BACKFILL_TEST_PG_URL ({str(exc.orig).strip().splitlines()[0]})"
        ) from None
    url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        prepare_database(url)
        yield url
    finally:
        _admin(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def prepare_database(url: str) -> None:
    """Migrate the database at `url` and make its `default_pool` unlimited."""
    engine = create_engine_for(url)
    try:
        migrate(engine)
        with engine.begin() as conn:
            pools.upsert(conn, DEFAULT_POOL, pools.UNLIMITED)
    finally:
        engine.dispose()


def _admin(admin: Engine, sql: str) -> None:
    with admin.connect() as conn:
        conn.execute(sa.text(sql))


@contextmanager
def redis_index() -> Iterator[tuple[str, redis.Redis]]:
    """(URL, client) of an empty Redis DB index marked as ours; FLUSHDB'd after."""
    token = uuid.uuid4().hex
    for index in range(15, 0, -1):
        client = redis.Redis.from_url(f"{REDIS_URL}/{index}")
        try:
            taken = client.dbsize() == 0 and client.set(OWNER_KEY, token, nx=True, ex=3600)
        except redis.ConnectionError as exc:
            raise BenchSetupError(f"Redis at {REDIS_URL} does not answer: {exc}") from None
        if taken:
            break
        client.close()
    else:
        raise BenchSetupError(f"every Redis DB index of {REDIS_URL} is in use")
    try:
        yield f"{REDIS_URL}/{index}", client
    finally:
        if client.get(OWNER_KEY) == token.encode():
            client.flushdb()
        client.close()


def bench_settings(database_url: str, broker_url: str, home: Path) -> Settings:
    """Production defaults (heartbeats, timeouts) on the bench's servers and DAGs."""
    return Settings.from_env(
        {},
        home=home.absolute(),
        database_url=database_url,
        broker_url=broker_url,
        dags_folder=DAGS_FOLDER.absolute(),
    )


def embedded_settings(home: Path) -> Settings:
    """The embedded default under a fresh `home`: SQLite, `filesystem://`, prepared."""
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    # The home from the environment given: the default database and broker derive from it.
    env = {"BACKFILL_HOME": str(home.absolute()), "BACKFILL_DAGS_FOLDER": str(DAGS_FOLDER)}
    settings = Settings.from_env(env)
    prepare_database(settings.database_url)
    return settings


def user_env(settings: Settings, *, embedded: bool = False) -> dict[str, str]:
    """The variables a user sets for `settings`; on the embedded default only the home
    and DAGs folder (the database and broker are the defaults under the home)."""
    env = {"BACKFILL_HOME": str(settings.home), "BACKFILL_DAGS_FOLDER": str(settings.dags_folder)}
    if not embedded:
        env["BACKFILL_DATABASE_URL"] = settings.database_url
        env["BACKFILL_BROKER_URL"] = settings.broker_url
    return env
