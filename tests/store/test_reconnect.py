"""`store.reconnect`: which errors are retried, how long, and what is said, on real PostgreSQL.

The faults are real: a backend killed by `pg_terminate_backend` (its own), a
port nothing listens on, a database that does not exist, a syntax error.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from backfill.errors import Unreachable
from backfill.store.db import create_engine_for, describe
from backfill.store.reconnect import Outage, Reconnect, is_transient

NOWHERE = "postgresql://postgres:secret@127.0.0.1:1/backfill"  # port 1: connection refused


@pytest.fixture
def nowhere() -> Iterator[Engine]:
    engine = create_engine_for(NOWHERE)
    yield engine
    engine.dispose()


class Said:
    """An Outage's notifications, kept."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.outage = Outage("database", self.lines.append)


def error_of(engine: Engine, sql: str = "SELECT 1") -> BaseException:
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(sql))
    except sa.exc.DBAPIError as exc:
        return exc
    pytest.fail(f"{sql!r} did not fail")


def test_a_dropped_connection_is_retried_on_a_fresh_one_and_not_called_an_outage(
    pg_engine: Engine,
) -> None:
    said = Said()
    attempts: list[int] = []

    def work() -> int:
        with pg_engine.connect() as conn:
            pid = int(conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())
            attempts.append(pid)
            if len(attempts) == 1:  # the server drops this very connection mid-statement
                conn.execute(sa.text("SELECT pg_terminate_backend(pg_backend_pid())"))
            return pid

    pid = Reconnect(outage=said.outage).run(work)
    assert len(attempts) == 2
    assert pid != attempts[0]  # a fresh connection
    assert said.lines == []  # a lone drop that the next attempt replaced is no outage


def test_what_is_transient(pg_engine: Engine, nowhere: Engine, pg_url: str) -> None:
    assert is_transient(error_of(nowhere))  # refused: the server is down or restarting
    with pg_engine.connect() as conn, pytest.raises(sa.exc.DBAPIError) as killed:
        conn.execute(sa.text("SELECT pg_terminate_backend(pg_backend_pid())"))
    assert is_transient(killed.value)
    assert not is_transient(error_of(pg_engine, "SELEC 1"))  # a bug, not an outage
    nope = make_url(pg_url).set(database="nope")
    missing = create_engine_for(nope.render_as_string(hide_password=False))
    try:
        assert not is_transient(error_of(missing))  # configuration: does not heal
    finally:
        missing.dispose()
    assert not is_transient(ValueError("not a database error"))


def test_a_budget_ends_in_unreachable_naming_the_database_said_once(nowhere: Engine) -> None:
    said = Said()
    attempts: list[float] = []

    def work() -> None:
        attempts.append(time.monotonic())
        with nowhere.connect():
            pass

    started = time.monotonic()
    with pytest.raises(Unreachable) as gave_up:
        Reconnect(target=describe(nowhere), budget=1.0, outage=said.outage).run(work)
    assert time.monotonic() - started < 5.0
    assert len(attempts) >= 3  # backed off and retried, within the budget
    message = str(gave_up.value)
    assert message.startswith("cannot reach the database at postgresql://postgres:***@127.0.0.1:1")
    assert "Connection refused" in message
    assert "secret" not in message
    assert len(said.lines) == 1
    assert said.lines[0].startswith("database unreachable since ")
    assert "retrying (connection to server at" in said.lines[0]


def test_a_stop_ends_the_retrying_at_once(nowhere: Engine) -> None:
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    started = time.monotonic()

    def work() -> None:
        with nowhere.connect():
            pass

    with pytest.raises(Unreachable, match="stopped while retrying"):
        Reconnect(budget=None, stop=stop).run(work)
    assert time.monotonic() - started < 3.0


def test_any_other_error_is_raised_on_the_first_attempt(pg_engine: Engine) -> None:
    attempts: list[int] = []

    def work() -> None:
        attempts.append(1)
        with pg_engine.connect() as conn:
            conn.execute(sa.text("SELEC 1"))

    with pytest.raises(sa.exc.ProgrammingError):
        Reconnect().run(work)
    assert attempts == [1]


def test_an_outage_is_said_once_when_it_starts_and_once_when_it_ends() -> None:
    said = Said()
    drop = ConnectionError("server closed the connection unexpectedly")
    said.outage.failed(drop)  # a lone drop: nothing said yet
    assert said.lines == []
    said.outage.ok()
    assert said.lines == []
    assert said.outage.latest() is None
    for _ in range(5):
        said.outage.failed(drop)
    said.outage.ok()
    said.outage.ok()
    assert [line.split(" since ")[0] for line in said.lines[:1]] == ["database unreachable"]
    assert said.lines[1].startswith("database reachable again after ")
    assert len(said.lines) == 2
    latest = said.outage.latest()
    assert latest is not None
    assert latest[1] is not None


def test_a_broker_outage_is_said_at_its_first_failure() -> None:
    lines: list[str] = []
    broker = Outage("broker", lines.append, tolerated=0)  # publishing has retried already
    broker.failed(ConnectionError("Error 111 connecting to 127.0.0.1:6379. Refused."))
    broker.failed(ConnectionError("again"))
    broker.ok()
    assert len(lines) == 2
    assert lines[0].startswith("broker unreachable since ")
    assert lines[0].endswith(", retrying (Error 111 connecting to 127.0.0.1:6379. Refused.)")
    assert lines[1].startswith("broker reachable again after ")
