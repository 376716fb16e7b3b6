"""Engines and schema migrations for the metadata database.

Invariants:
- SQLite runs in WAL mode with a busy timeout and foreign keys on, and every
  transaction starts with `BEGIN IMMEDIATE`: a writer takes the write lock
  when it begins, so two writers queue on the busy timeout instead of
  deadlocking on a read-to-write lock upgrade (SQLite answers such a deadlock
  with "database is locked" at once, without waiting). A connection given the
  execution option `sqlite_begin="DEFERRED"` begins a read-only snapshot
  instead, which never waits for writers in WAL mode.
- The schema is changed only by Alembic migrations (`migrations/`), never by
  `metadata.create_all`. Only the embedded SQLite default migrates itself; any
  other database must already be at the head revision (`backfill db migrate`).
- Nothing here prints a URL with its password (`backfill.config.redact`).
- A PostgreSQL peer that vanishes (a partition, a host gone) is found out on
  both ends within the heartbeat timeout, not after the kernel's defaults
  (two hours of keepalive silence, ~15 minutes of retransmissions): each side
  probes an idle connection (TCP keepalives) and gives up on data left
  unacknowledged (`tcp_user_timeout`), and the server ends a session idle in
  a transaction, rolling it back and releasing its row locks, so a host cut
  off mid-transaction cannot block the others (`liveness`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine, make_url

from backfill.config import Settings, redact
from backfill.errors import ConfigError

if TYPE_CHECKING:  # Alembic is imported where it is used: every command checks the
    # schema's revision, only `db migrate` and the embedded default's first use migrate,
    # and importing Alembic costs a quarter of a second of every command's start-up.
    from alembic.config import Config
    from alembic.script import ScriptDirectory

MIGRATIONS = Path(__file__).parent / "migrations"
# The newest migration's revision: what `require_current_schema` expects, read without
# Alembic. A test holds it equal to the head of `migrations/`.
SCHEMA_HEAD = "0006"
VERSION_TABLE = "alembic_version"
SQLITE_BUSY_TIMEOUT = 30.0  # seconds a writer waits for the lock before failing
PG_CONNECT_TIMEOUT = 10  # seconds
# Serializes concurrent `migrate` calls on PostgreSQL (an arbitrary constant key).
_PG_MIGRATE_LOCK = 0x6261636B66696C6C  # "backfill"


def create_engine_for(
    url: str, *, autocommit: bool = False, pre_ping: bool = True, dead_after: float = 60.0
) -> Engine:
    """An engine for `url`, tuned for the backend (see the module invariants).

    `dead_after`: seconds after which a silent PostgreSQL peer counts as gone
    (`open_engine` gives BACKFILL_HEARTBEAT_TIMEOUT).

    `pre_ping`: test a pooled PostgreSQL connection (one round trip) at each
    checkout, so a connection the server dropped while idle is replaced. Off
    only for an engine whose every unit of work is retried on a fresh
    connection after a disconnect (`store.reconnect.Reconnect`): there the
    retry replaces it, and the ping would cost a round trip per checkout.

    `autocommit`: every statement commits on its own. On PostgreSQL the pool's
    connections are in autocommit from the moment they connect: switching a
    pooled connection per checkout (`execution_options(isolation_level=...)`)
    has the pool switch it back at checkin, and on a connection the server
    dropped in between, that raises out of the pool and leaks the connection's
    slot (SQLAlchemy 2.1). SQLite connections do not drop: there the switch is
    per checkout, and the "begin" listener opens no transaction.
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        engine = _sqlite_engine(parsed)
        return engine.execution_options(isolation_level="AUTOCOMMIT") if autocommit else engine
    if backend == "postgresql":
        options = {"isolation_level": "AUTOCOMMIT"} if autocommit else {}
        return _postgres_engine(parsed, dead_after, pool_pre_ping=pre_ping, **options)
    raise ConfigError(
        f"unsupported database {redact(url)!r}: BACKFILL_DATABASE_URL must be a "
        "postgresql:// or sqlite:// URL"
    )


def _postgres_engine(url: URL, dead_after: float, **options: Any) -> Engine:
    if url.drivername == "postgresql":
        # SQLAlchemy 2.1 defaults to psycopg 3; the package ships psycopg2.
        url = url.set(drivername="postgresql+psycopg2")
    return sa.create_engine(
        url,
        pool_size=5,
        max_overflow=5,
        connect_args={
            "connect_timeout": PG_CONNECT_TIMEOUT,
            "application_name": "backfill",
            **liveness(dead_after),
        },
        **options,
    )


def liveness(dead_after: float) -> dict[str, Any]:
    """libpq parameters that find a vanished peer within about `dead_after` seconds, on
    the client and, through `options`, on the server (see the module invariants)."""
    idle = max(1, round(dead_after / 4))  # silence before the first keepalive probe
    interval = max(1, round(dead_after / 8))  # then a probe this often, 3 unanswered: gone
    unacked_ms = max(1000, round(dead_after * 1000))
    # Never below 10 s: a session busy in Python between two statements (a large
    # pass planning) is not a vanished one; ending it only costs a retry.
    idle_in_transaction_ms = max(10_000, unacked_ms)
    server = {
        "tcp_keepalives_idle": idle,
        "tcp_keepalives_interval": interval,
        "tcp_keepalives_count": 3,
        "tcp_user_timeout": unacked_ms,
        "idle_in_transaction_session_timeout": idle_in_transaction_ms,
    }
    return {
        "keepalives": 1,
        "keepalives_idle": idle,
        "keepalives_interval": interval,
        "keepalives_count": 3,
        "tcp_user_timeout": unacked_ms,
        "options": " ".join(f"-c {name}={value}" for name, value in server.items()),
    }


def _sqlite_engine(url: URL) -> Engine:
    # sqlite3's `timeout` is SQLite's busy timeout: how long to wait for a lock.
    engine = sa.create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT})

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # The PRAGMAs run outside any transaction, as journal_mode requires.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @sa.event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        # Stop the sqlite3 driver from issuing its own (deferred) BEGIN; the
        # "begin" listener below issues ours. Set on every checkout because
        # returning a connection used with isolation_level="AUTOCOMMIT" to the
        # pool resets the driver to its legacy mode.
        dbapi_connection.isolation_level = None

    @sa.event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        options = connection.get_execution_options()
        if options.get("isolation_level") == "AUTOCOMMIT":
            return  # each statement commits on its own: no transaction to open
        mode = options.get("sqlite_begin", "IMMEDIATE")
        if mode not in ("IMMEDIATE", "DEFERRED"):
            raise ValueError(f"sqlite_begin must be IMMEDIATE or DEFERRED, not {mode!r}")
        connection.exec_driver_sql(f"BEGIN {mode}")

    return engine


def alembic_config(connection: Connection | None = None) -> Config:
    """The Alembic configuration, built in code: the package ships no alembic.ini."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The head revision of the migrations the package ships (Alembic's reading)."""
    head = _scripts().get_current_head()
    if head is None:  # pragma: no cover - the package always ships migrations
        raise RuntimeError(f"no migrations found in {MIGRATIONS}")
    return head


def _scripts() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config())


def schema_revision(engine: Engine) -> str | None:
    """The database's current revision; None when it has no Backfill schema."""
    with engine.connect().execution_options(sqlite_begin="DEFERRED") as connection:
        if not sa.inspect(connection).has_table(VERSION_TABLE):
            return None
        version = sa.table(VERSION_TABLE, sa.column("version_num"))
        found = connection.execute(sa.select(version.c.version_num)).scalars().all()
    return found[0] if len(found) == 1 else None  # Alembic's own reading: one head or none


def migrate(engine: Engine) -> None:
    """Create or upgrade the schema to the head revision, in one transaction.

    Idempotent, and safe to run from several processes at once: SQLite's
    `BEGIN IMMEDIATE` and a PostgreSQL advisory lock serialize them, and each
    later one finds the schema current and does nothing.
    """
    with engine.connect() as connection, _foreign_keys_off(connection), connection.begin():
        if connection.dialect.name == "postgresql":
            connection.execute(
                sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATE_LOCK}
            )
        from alembic import command
        from alembic.util import CommandError

        try:
            command.upgrade(alembic_config(connection), "head")
        except CommandError as exc:
            # e.g. a newer backfill migrated it to a revision this code does not know.
            raise ConfigError(
                f"cannot migrate {describe(engine)}: {exc}; is this backfill older than "
                "the one that last migrated it?"
            ) from None
        _check_foreign_keys(connection)


@contextlib.contextmanager
def _foreign_keys_off(connection: Connection) -> Iterator[None]:
    """SQLite: foreign keys off while migrating, as SQLite's recipe for rebuilding a table
    requires (revision 0006); `_check_foreign_keys` checks them before commit. The PRAGMA
    is a no-op inside a transaction: it is set on the driver's connection before one."""
    if connection.dialect.name != "sqlite":
        yield
        return
    raw = connection.connection.dbapi_connection
    assert raw is not None
    raw.execute("PRAGMA foreign_keys=OFF")
    try:
        yield
    finally:
        raw.execute("PRAGMA foreign_keys=ON")


def _check_foreign_keys(connection: Connection) -> None:
    if connection.dialect.name == "sqlite":
        broken = connection.exec_driver_sql("PRAGMA foreign_key_check").first()
        if broken is not None:
            raise RuntimeError(f"migration left a dangling foreign key: {tuple(broken)}")


def require_current_schema(engine: Engine) -> None:
    """Raise `ConfigError` unless the database is at the head revision."""
    current, expected = schema_revision(engine), SCHEMA_HEAD
    if current == expected:
        return
    if current is None:
        problem = "has no Backfill schema"
    elif not _known(current):
        raise ConfigError(
            f"{describe(engine)} is at schema revision {current!r}, which this version of "
            f"backfill does not know (it expects {expected!r}); upgrade backfill"
        )
    else:
        problem = f"is at schema revision {current!r}, expected {expected!r}"
    raise ConfigError(f"{describe(engine)} {problem}; run `backfill db migrate`")


def _known(revision: str) -> bool:
    from alembic.util import CommandError

    try:
        _scripts().get_revision(revision)
    except CommandError:
        return False
    return True


def open_engine(
    settings: Settings, *, create: bool, autocommit: bool = False, pre_ping: bool = True
) -> Engine | None:
    """The engine of `settings.database_url`, with its schema checked.

    The embedded SQLite database is created and migrated on first use when
    `create` is true. With `create` false (read-only commands) a missing or not
    yet migrated SQLite file gives None and nothing is created, neither the file
    nor its folder.
    Any other database is never migrated here: it must be current.
    `autocommit`, `pre_ping`: see `create_engine_for`; not `autocommit` with
    `create` (a migration is one transaction).
    """
    if create and autocommit:
        raise ValueError("an autocommit engine cannot migrate: create=True needs transactions")
    url = make_url(settings.database_url)
    path = _sqlite_file(url)
    if path is not None and not path.exists():
        if not create:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine_for(
        settings.database_url,
        autocommit=autocommit,
        pre_ping=pre_ping,
        dead_after=settings.heartbeat_timeout,
    )
    try:
        if create and url.get_backend_name() == "sqlite":
            migrate(engine)
        elif path is not None and schema_revision(engine) is None:
            # A SQLite file another process has just created and not migrated
            # yet holds nothing, like a missing file.
            engine.dispose()
            return None
        else:
            require_current_schema(engine)
    except BaseException:
        engine.dispose()
        raise
    return engine


def _sqlite_file(url: URL) -> Path | None:
    """The file of a SQLite URL; None for other backends and in-memory databases."""
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database).absolute()


def describe(engine: Engine) -> str:
    # Without the driver: the user wrote postgresql://, not postgresql+psycopg2://.
    url = engine.url.set(drivername=engine.url.get_backend_name())
    return f"the database at {redact(url.render_as_string(hide_password=False))}"
