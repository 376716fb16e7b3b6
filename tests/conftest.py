"""Database fixtures for every test module: real SQLite files and real PostgreSQL.

- `backend`: "sqlite" or "postgresql"; a test taking `db_url`, `engine` or
  `empty_db_url` runs once per backend (the PostgreSQL run is marked `postgres`).
- `db_url`: the URL of a freshly migrated, empty database of its own.
- `engine`: `backfill.store.db.create_engine_for(db_url)`, disposed after the test.
- `empty_db_url`: a database of its own with no schema at all.
- `pg_url`: like `db_url`, always PostgreSQL (for PostgreSQL-only tests).
- `module_db_url`: like `db_url`, shared by a module's tests, on each backend
  the module lists in `BACKENDS` (default: PostgreSQL only); the PostgreSQL
  one is marked `postgres`.
- `pg_engine`: `create_engine_for(pg_url)`, disposed after the test.

Each database is migrated once per session into a template (a file copied per
test for SQLite; `CREATE DATABASE ... TEMPLATE` for PostgreSQL), so a fresh
database costs milliseconds. PostgreSQL is reached through the admin URL in
BACKFILL_TEST_PG_URL (default postgresql://postgres@127.0.0.1:5432/postgres).
If it does not answer, its tests are skipped on a laptop but FAIL when the
environment variable CI is set: CI never silently skips them.

After every test, each database these fixtures made for it is read back
(`_test_databases`, autouse): every (from, to) pair in its state journals must
be in its transition table (`backfill.store.journal`), so a statement, or a
test, that moves a TI, run or backfill along a transition the table does not
list fails the test. A PostgreSQL database is dropped after that check.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url

from backfill.config import redact
from backfill.store.db import create_engine_for, migrate
from backfill.store.journal import illegal_transitions

# The harness's fixtures (`broker`, `workers`, `coordinators`): tests/support/fixtures.py;
# the browser's (`browser`, `page`): tests/support/browser.py.
pytest_plugins = ["support.fixtures", "support.browser", "support.web"]

PG_ADMIN_URL = os.environ.get(
    "BACKFILL_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # A module lists the backends of its `module_db_url` in BACKENDS.
    if "module_db_url" in metafunc.fixturenames:
        backends = getattr(metafunc.module, "BACKENDS", ("postgresql",))
        metafunc.parametrize("module_db_url", backends, indirect=True, scope="module")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # `-m "not postgres"` must deselect every test that needs the server.
    for item in items:
        callspec = getattr(item, "callspec", None)
        module_pg = callspec is not None and callspec.params.get("module_db_url") == "postgresql"
        if module_pg or "pg_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)


class MadeDatabases:
    """The databases made for one test: checked after it, then dropped (PostgreSQL)."""

    def __init__(self) -> None:
        self.urls: list[str] = []
        self.drops: list[Callable[[], None]] = []

    def add(self, url: str, *, drop: Callable[[], None] | None = None) -> str:
        self.urls.append(url)
        if drop is not None:
            self.drops.append(drop)
        return url

    def check_and_drop(self) -> None:
        """The journal check of every database; then the PostgreSQL ones are dropped,
        whatever the check said."""
        try:
            found = {url: check_journals(url) for url in self.urls}
        finally:
            for drop in self.drops:
                drop()
        illegal = {redact(url): pairs for url, pairs in found.items() if pairs}
        assert not illegal, f"transitions missing from their tables were journaled: {illegal}"


@pytest.fixture(autouse=True)
def _test_databases() -> Iterator[MadeDatabases]:
    """After the test (and every fixture using its databases), the journal check of
    each database it made; then the PostgreSQL ones are dropped, whatever the check said."""
    made = MadeDatabases()
    yield made
    made.check_and_drop()


def check_journals(url: str) -> list[str]:
    """The journaled transitions of the database at `url` that their table does not list;
    nothing for a SQLite database that was never created."""
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return []
    engine = create_engine_for(url, pre_ping=False)
    try:
        with engine.connect() as conn:
            return [str(t) for t in illegal_transitions(conn)]
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    """The database backend under test."""
    return str(request.param)


@pytest.fixture
def db_url(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, _test_databases: MadeDatabases
) -> str:
    """A freshly migrated, empty database for this test alone."""
    return _fresh_database(backend, request, tmp_path, _test_databases)


@pytest.fixture(scope="module")
def module_db_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A freshly migrated database shared by the tests of one module, on the backend of
    its parameter (`pytest_generate_tests`: the module's BACKENDS). Its journals are
    checked, as a test's are, when the module is done with it."""
    made = MadeDatabases()
    yield _fresh_database(request.param, request, tmp_path_factory.mktemp("db"), made)
    made.check_and_drop()


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on `db_url`, disposed after the test."""
    eng = create_engine_for(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def empty_db_url(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, _test_databases: MadeDatabases
) -> str:
    """A database with no schema (the SQLite file does not exist yet)."""
    if backend == "sqlite":
        return _test_databases.add(f"sqlite:///{tmp_path / 'empty.db'}")
    return _pg_database(request.getfixturevalue("_pg_admin"), "template0", _test_databases)


@pytest.fixture
def pg_url(_pg_admin: Engine, _pg_template: str, _test_databases: MadeDatabases) -> str:
    """A freshly migrated, empty PostgreSQL database for this test alone."""
    return _pg_database(_pg_admin, _pg_template, _test_databases)


@pytest.fixture
def pg_engine(pg_url: str) -> Iterator[Engine]:
    """An engine on `pg_url`, disposed after the test."""
    eng = create_engine_for(pg_url)
    yield eng
    eng.dispose()


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "backfill.db"
    eng = create_engine_for(f"sqlite:///{path}")
    migrate(eng)
    eng.dispose()  # the last connection to close checkpoints the WAL into the file
    return path


@pytest.fixture(scope="session")
def _pg_admin() -> Iterator[Engine]:
    eng = create_engine_for(PG_ADMIN_URL).execution_options(isolation_level="AUTOCOMMIT")
    try:
        with eng.connect():
            pass
    except sa.exc.OperationalError as exc:
        eng.dispose()
        message = (
            f"PostgreSQL at {redact(PG_ADMIN_URL)} does not answer ({_first_line(exc.orig)}); "
            "start it or point BACKFILL_TEST_PG_URL at a server"
        )
        if os.environ.get("CI"):
            pytest.fail(f"{message}. CI is set: PostgreSQL tests must not be skipped", False)
        pytest.skip(message)
    yield eng
    eng.dispose()


@pytest.fixture(scope="session")
def _pg_template(_pg_admin: Engine) -> Iterator[str]:
    name = f"backfill_tmpl_{uuid.uuid4().hex[:12]}"
    _admin_execute(_pg_admin, f'CREATE DATABASE "{name}"')
    try:
        eng = create_engine_for(_pg_url_of(name).render_as_string(hide_password=False))
        migrate(eng)
        eng.dispose()  # a template must have no open connection when it is copied
        yield name
    finally:
        _admin_execute(_pg_admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _fresh_database(
    backend: str, request: pytest.FixtureRequest, folder: Path, made: MadeDatabases
) -> str:
    """A copy of the migrated template on `backend` (the SQLite file in `folder`)."""
    if backend == "sqlite":
        target = folder / "backfill.db"
        shutil.copyfile(request.getfixturevalue("_sqlite_template"), target)
        return made.add(f"sqlite:///{target}")
    template = request.getfixturevalue("_pg_template")
    return _pg_database(request.getfixturevalue("_pg_admin"), template, made)


def _pg_database(admin: Engine, template: str, made: MadeDatabases) -> str:
    name = f"backfill_test_{uuid.uuid4().hex[:12]}"
    _admin_execute(admin, f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    # FORCE: a test that leaked a connection must not leak its database too.
    drop = f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
    url = _pg_url_of(name).render_as_string(hide_password=False)
    return made.add(url, drop=lambda: _admin_execute(admin, drop))


def _first_line(error: BaseException | None) -> str:
    return str(error).strip().splitlines()[0] if error else "no answer"


def _pg_url_of(database: str) -> URL:
    return make_url(PG_ADMIN_URL).set(database=database)


def _admin_execute(admin: Engine, sql: str) -> None:
    # The admin engine is in AUTOCOMMIT: CREATE/DROP DATABASE refuse a transaction.
    with admin.connect() as conn:
        conn.exec_driver_sql(sql)
