"""The bench's servers: a fresh PostgreSQL database, a Redis DB index, 2 workers.

Invariants:
- the database is created for the bench (`backfill_bench_<random>`),
  migrated, given an unlimited `default_pool` (limits are not what is
  measured), and dropped at the end even if the bench failed;
- the Redis DB index is an empty one, marked with the owner key the test
  suite uses (`backfill-it:owner`), so a concurrent test run never takes it;
  at the end it is emptied with FLUSHDB of that index only, if still ours;
- the workers are `LocalWorkers`: real `celery worker -c 1` processes of
  `benchmarks.worker_app` (the product's app plus the no-op), stopped warmly
  at the end (SIGKILL after a deadline).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from backfill.config import Settings, redact
from backfill.db import create_engine_for, migrate
from backfill.local_workers import LocalWorkers
from backfill.store import pools
from backfill.task_options import DEFAULT_POOL, DEFAULT_QUEUE

PG_ADMIN_URL = os.environ.get(
    "BACKFILL_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("BACKFILL_TEST_REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")
OWNER_KEY = "backfill-it:owner"  # the test suite's mark of a taken Redis DB index
WORKERS = 2
WORKER_APP = "benchmarks.worker_app"
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
        engine = create_engine_for(url)
        try:
            migrate(engine)
            with engine.begin() as conn:
                pools.upsert(conn, DEFAULT_POOL, pools.UNLIMITED)
        finally:
            engine.dispose()
        yield url
    finally:
        _admin(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


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


def workers(settings: Settings) -> LocalWorkers:
    return LocalWorkers(settings, WORKERS, queues=(DEFAULT_QUEUE,), app=WORKER_APP)
