"""The fault-injecting proxy (`pgproxy.py`) against the real PostgreSQL server.

- with nothing armed, traffic passes unchanged (results, errors, transactions,
  LISTEN/NOTIFY);
- a lost reply: the statement (or COMMIT) committed on the server, yet the
  client gets a disconnect error; `after` scopes the fault to one transaction;
- the fault is one-shot, and `close()` returns promptly with connections open.

Each test fails loudly if the armed fault did not fire (`armed.wait`).
"""

from __future__ import annotations

import select
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg2  # type: ignore[import-untyped]
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from support.waiting import wait_until

from backfill.store.db import create_engine_for

from .pgproxy import SSL_REQUEST, PgProxy

FIRE_TIMEOUT = 10.0  # seconds; a fault fires within milliseconds


@pytest.fixture
def direct(pg_url: str) -> Iterator[Engine]:
    """An engine on the test database without the proxy, with a scratch table `t`."""
    eng = create_engine_for(pg_url)
    with eng.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL)")
        conn.exec_driver_sql("INSERT INTO t VALUES (1, 0)")
    yield eng
    eng.dispose()


@pytest.fixture
def proxied(direct: Engine, proxy: PgProxy, pg_url: str) -> Iterator[Engine]:
    """An engine on the test database through the proxy (`direct` created `t` first)."""
    eng = create_engine_for(proxy.url(pg_url))
    yield eng
    eng.dispose()


def value(engine: Engine, row_id: int = 1) -> int | None:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT v FROM t WHERE id = :id"), {"id": row_id}).scalar()


def proxy_threads(proxy: PgProxy) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(f"pgproxy-{proxy.port}-")]


def test_url_goes_through_the_proxy_without_encryption(proxy: PgProxy) -> None:
    url = make_url(proxy.url("postgresql://u:s%40cret@db.example:6543/app?x=1"))
    assert (url.host, url.port, url.database) == ("127.0.0.1", proxy.port, "app")
    assert (url.username, url.password) == ("u", "s@cret")
    assert dict(url.query) == {"x": "1", "sslmode": "disable", "gssencmode": "disable"}


def test_traffic_passes_unchanged_when_nothing_is_armed(
    direct: Engine, proxied: Engine, proxy: PgProxy
) -> None:
    # Big results span many recv() calls: the framing must reassemble them exactly.
    rows = "SELECT g, md5(g::text), repeat('ż', mod(g, 50)) FROM generate_series(1, 20000) g"
    with proxied.connect() as via, direct.connect() as plain:
        assert via.exec_driver_sql(rows).all() == plain.exec_driver_sql(rows).all()
        big = via.exec_driver_sql("SELECT repeat('xyz', 1000000)").scalar()
        assert big == "xyz" * 1_000_000
        for i in range(300):
            assert via.execute(sa.text("SELECT :i + 1"), {"i": i}).scalar() == i + 1
        # An error reply passes through and the connection stays usable.
        with pytest.raises(sa.exc.DataError, match="division by zero"):
            via.exec_driver_sql("SELECT 1 / 0")
        via.rollback()
        assert via.exec_driver_sql("SELECT 'still here'").scalar() == "still here"
        via.rollback()

    # Transactions: a rolled-back one leaves nothing, a committed one is seen directly.
    with proxied.connect() as via:
        via.exec_driver_sql("INSERT INTO t VALUES (2, 2)")
        via.rollback()
        via.exec_driver_sql("INSERT INTO t VALUES (3, 3)")
        via.exec_driver_sql("UPDATE t SET v = 10 WHERE id = 1")
        via.commit()
    assert (value(direct, 1), value(direct, 2), value(direct, 3)) == (10, None, 3)

    # LISTEN/NOTIFY: an asynchronous NotificationResponse reaches the listener.
    listener = proxied.raw_connection()
    try:
        pg: Any = listener.driver_connection
        pg.autocommit = True
        pg.cursor().execute("LISTEN pgproxy_test")
        with proxied.connect() as via:
            via.exec_driver_sql("SELECT pg_notify('pgproxy_test', 'hello ✓')")
            via.commit()

        def notified() -> bool:
            select.select([pg], [], [], 0.1)
            pg.poll()
            return bool(pg.notifies)

        wait_until(notified, timeout=FIRE_TIMEOUT, what="the notification", interval=0.02)
        assert [(n.channel, n.payload) for n in pg.notifies] == [("pgproxy_test", "hello ✓")]
    finally:
        listener.close()


def test_lost_reply_to_autocommit_update_landed(
    direct: Engine, proxied: Engine, proxy: PgProxy
) -> None:
    armed = proxy.lose_reply("UPDATE t")
    autocommit = proxied.execution_options(isolation_level="AUTOCOMMIT")
    with autocommit.connect() as conn, pytest.raises(sa.exc.OperationalError) as lost:
        conn.exec_driver_sql("UPDATE t SET v = 1 WHERE id = 1")
    assert armed.wait(FIRE_TIMEOUT), "the fault did not fire"
    assert lost.value.connection_invalidated
    assert "server closed the connection unexpectedly" in str(lost.value)
    assert armed.query == "UPDATE t SET v = 1 WHERE id = 1"
    assert value(direct) == 1  # the UPDATE committed although its reply was lost


def test_lost_commit_reply_scoped_by_after(direct: Engine, proxied: Engine, proxy: PgProxy) -> None:
    armed = proxy.lose_reply("COMMIT", after="UPDATE t")
    with proxied.connect() as conn:
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        conn.exec_driver_sql("INSERT INTO t VALUES (2, 0)")
        conn.commit()  # no "UPDATE t" in this transaction: its COMMIT passes
        assert not armed.fired.is_set()
        assert value(direct, 2) == 0

        assert conn.exec_driver_sql("SELECT pg_backend_pid()").scalar() == pid  # same session
        conn.exec_driver_sql("UPDATE t SET v = 7 WHERE id = 1")
        with pytest.raises(sa.exc.OperationalError) as lost:
            conn.commit()
    assert armed.wait(FIRE_TIMEOUT), "the fault did not fire"
    assert lost.value.connection_invalidated
    assert armed.query == "COMMIT"
    assert value(direct) == 7  # the COMMIT landed


def test_after_does_not_reach_across_autocommit_statements(
    direct: Engine, proxied: Engine, proxy: PgProxy
) -> None:
    # `after` looks back over the transaction as the server reports it: an autocommit
    # statement is a transaction of its own, and so is a rolled-back one.
    armed = proxy.lose_reply("COMMIT", after="UPDATE t")
    raw = proxied.raw_connection()
    try:
        pg: Any = raw.driver_connection
        cur = pg.cursor()
        pg.autocommit = True
        cur.execute("UPDATE t SET v = 1 WHERE id = 1")
        pg.autocommit = False
        cur.execute("INSERT INTO t VALUES (2, 0)")
        pg.commit()
        assert not armed.fired.is_set()
        # A ROLLBACK ends the transaction too ...
        cur.execute("UPDATE t SET v = 2 WHERE id = 1")
        pg.rollback()
        cur.execute("INSERT INTO t VALUES (3, 0)")
        pg.commit()
        assert not armed.fired.is_set()
        # ... but a ROLLBACK TO SAVEPOINT does not.
        cur.execute("UPDATE t SET v = 3 WHERE id = 1")
        cur.execute("SAVEPOINT s")
        with pytest.raises(psycopg2.errors.DivisionByZero):
            cur.execute("SELECT 1 / 0")
        cur.execute("ROLLBACK TO SAVEPOINT s")
        with pytest.raises(psycopg2.OperationalError, match="closed the connection"):
            pg.commit()
        assert armed.wait(FIRE_TIMEOUT), "the fault did not fire"
    finally:
        raw.invalidate()
    assert (value(direct, 1), value(direct, 2), value(direct, 3)) == (3, 0, 0)


def test_fault_is_one_shot_and_new_connections_work(
    direct: Engine, proxied: Engine, proxy: PgProxy, pg_url: str
) -> None:
    armed = proxy.lose_reply("UPDATE t")
    with proxied.connect() as conn, pytest.raises(sa.exc.OperationalError):
        conn.exec_driver_sql("UPDATE t SET v = 1 WHERE id = 1")  # in a transaction
    assert armed.wait(FIRE_TIMEOUT), "the fault did not fire"
    assert value(direct) == 0  # in a transaction the UPDATE's reply, not its COMMIT, was lost

    # The same engine reconnects, and the pattern no longer matches anything.
    with proxied.begin() as conn:
        conn.exec_driver_sql("UPDATE t SET v = 2 WHERE id = 1")
    assert value(proxied) == 2
    fresh = create_engine_for(proxy.url(pg_url))
    try:
        with fresh.begin() as conn:
            conn.exec_driver_sql("UPDATE t SET v = 3 WHERE id = 1")
        assert value(fresh) == 3
    finally:
        fresh.dispose()
    # Arming again works; the replaced fault never fires.
    replaced = proxy.lose_reply("no such statement")
    again = proxy.lose_reply("UPDATE t")
    with proxied.connect() as conn, pytest.raises(sa.exc.OperationalError):
        conn.exec_driver_sql("UPDATE t SET v = 4 WHERE id = 1")
    assert again.wait(FIRE_TIMEOUT), "the fault did not fire"
    assert not replaced.fired.is_set()


def test_close_returns_promptly_with_connections_open(
    direct: Engine, proxied: Engine, proxy: PgProxy
) -> None:
    idle = [proxied.connect() for _ in range(3)]
    for conn in idle:
        conn.exec_driver_sql("SELECT 1")
    outcome: list[BaseException] = []

    def sleep_through_the_proxy() -> None:
        try:
            with proxied.connect() as conn:
                conn.exec_driver_sql("SELECT pg_sleep(60)")
        except BaseException as exc:
            outcome.append(exc)

    sleeper = threading.Thread(target=sleep_through_the_proxy, daemon=True)
    sleeper.start()

    def sleeping() -> bool:
        with direct.connect() as conn:
            query = (
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active'"
                " AND query = 'SELECT pg_sleep(60)' AND datname = current_database()"
            )
            return conn.exec_driver_sql(query).scalar() == 1

    wait_until(sleeping, timeout=FIRE_TIMEOUT, what="pg_sleep to run on the server", interval=0.02)
    assert len(proxy_threads(proxy)) >= 1 + 2 * 4  # accept + two per connection

    started = time.monotonic()
    proxy.close()
    assert time.monotonic() - started < 2.0
    assert proxy_threads(proxy) == []

    sleeper.join(FIRE_TIMEOUT)
    assert not sleeper.is_alive()
    assert len(outcome) == 1
    assert isinstance(outcome[0], sa.exc.OperationalError)
    for conn in idle:
        with pytest.raises(sa.exc.OperationalError):
            conn.exec_driver_sql("SELECT 1")
        conn.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", proxy.port), timeout=1).close()


def test_accepted_encryption_request_becomes_a_raw_pipe() -> None:
    # No TLS server at hand: a fake upstream answers 'S' to the SSLRequest, then echoes.
    upstream = socket.create_server(("127.0.0.1", 0))

    def fake_server() -> None:
        conn, _ = upstream.accept()
        with conn:
            assert conn.recv(8) == struct.pack("!ii", 8, SSL_REQUEST)
            conn.sendall(b"S")
            while data := conn.recv(4096):
                conn.sendall(data)

    server = threading.Thread(target=fake_server, daemon=True)
    server.start()
    with PgProxy(upstream_port=upstream.getsockname()[1]) as proxy:
        client = socket.create_connection(("127.0.0.1", proxy.port), timeout=FIRE_TIMEOUT)
        with client:
            client.sendall(struct.pack("!ii", 8, SSL_REQUEST))
            assert client.recv(1) == b"S"
            garbage = b"\x16\x03\x01 not a protocol message"  # e.g. a TLS ClientHello
            client.sendall(garbage)
            echoed = b""
            while len(echoed) < len(garbage) and (data := client.recv(4096)):
                echoed += data
            assert echoed == garbage
    server.join(FIRE_TIMEOUT)
    upstream.close()
    assert not server.is_alive()
