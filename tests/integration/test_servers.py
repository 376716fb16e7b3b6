"""The private servers of servers.py, against real PostgreSQL and Redis processes:
data and port survive a restart (Redis: only the port), a stopped server refuses
connections, a port taken at the first start is left for another, and `destroy()`
leaves no process and no directory."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from support.waiting import wait_until

from backfill.store.db import create_engine_for

from .servers import PostgresServer, RedisServer


def _alive(pid: int) -> bool:
    # pg_ctl detaches the postmaster, so init reaps it, not us: for a moment a dead
    # one may remain a zombie, which runs nothing. Count it as gone.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue  # exited while we looked
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@contextmanager
def _listening_on(port: int) -> Iterator[None]:
    """Someone else holding `port` of 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As servers do: the stopped server's closed connections linger in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()
        yield


# --- PostgreSQL ----------------------------------------------------------------------


def test_postgres_keeps_data_and_port_across_a_restart(postgres_server: PostgresServer) -> None:
    url = postgres_server.create_database("app")
    port = postgres_server.port
    engine = create_engine_for(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE kept (id int PRIMARY KEY, name text)")
            conn.exec_driver_sql("INSERT INTO kept VALUES (1, 'row')")

        postgres_server.restart_after(0.5)

        assert postgres_server.port == port
        assert postgres_server.is_running()
        # The SAME engine: its pooled connection died with the server, and
        # pool_pre_ping replaces it instead of handing it out.
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT name FROM kept").scalar_one() == "row"

        # A crash (no shutdown checkpoint) keeps every acknowledged commit too.
        with engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO kept VALUES (2, 'committed')")
        postgres_server.restart_after(0, mode="immediate")
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM kept").scalar_one() == 2
    finally:
        engine.dispose()


def test_postgres_refuses_connections_while_stopped(postgres_server: PostgresServer) -> None:
    engine = create_engine_for(postgres_server.url())
    try:
        postgres_server.stop()
        assert not postgres_server.is_running()
        with pytest.raises(sa.exc.OperationalError), engine.connect():
            pass

        postgres_server.start()
        postgres_server.start()  # idempotent while running
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT 1").scalar_one() == 1
    finally:
        engine.dispose()


def test_postgres_destroy_leaves_no_process_and_no_directory(
    postgres_server: PostgresServer,
) -> None:
    pid = int((postgres_server.data_dir / "postmaster.pid").read_text().split()[0])
    processes = [pid, *_children(pid)]  # the postmaster and its checkpointer, walwriter, ...
    assert len(processes) > 1
    assert all(_alive(p) for p in processes)

    postgres_server.destroy()

    wait_until(
        lambda: not any(_alive(p) for p in processes),
        timeout=10,
        what=f"PostgreSQL processes {processes} to be gone",
    )
    assert not postgres_server.directory.exists()
    assert not postgres_server.is_running()
    postgres_server.destroy()  # never raises, even twice (the fixture calls it again)


def test_postgres_moves_off_a_port_taken_before_its_first_start_only(
    postgres_server: PostgresServer,
) -> None:
    # The fixture's server holds its port: a second one told to try it first moves.
    second = PostgresServer(port=postgres_server.port)
    try:
        second.start()
        assert second.port != postgres_server.port
        assert second.is_running()
        assert postgres_server.is_running()

        # Once started, the port is the URL clients hold: taken, it is an error.
        second.stop()
        with _listening_on(second.port), pytest.raises(RuntimeError, match="port"):
            second.start()
        assert not second.is_running()
    finally:
        second.destroy()


# --- Redis ---------------------------------------------------------------------------


def test_redis_restart_loses_every_key_and_keeps_its_port(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    try:
        client.set("key", "value")
        assert client.get("key") == b"value"
        port = redis_server.port

        redis_server.restart_after(0.5)

        assert redis_server.port == port
        assert redis_server.is_running()
        assert client.ping()  # the same client: it reconnects
        assert client.get("key") is None  # nothing was persisted
    finally:
        client.close()


def test_redis_destroy_leaves_no_process_and_no_directory(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    try:
        pid = int(client.info("server")["process_id"])
    finally:
        client.close()
    assert _alive(pid)

    redis_server.destroy()

    assert not _alive(pid)  # our own child: stop() waited for it and reaped it
    assert not redis_server.directory.exists()
    assert not redis_server.is_running()
    redis_server.destroy()  # never raises, even twice


def test_redis_moves_off_a_port_taken_before_its_first_start_only(
    redis_server: RedisServer,
) -> None:
    second = RedisServer(port=redis_server.port)
    try:
        second.start()
        assert second.port != redis_server.port
        assert second.is_running()
        assert redis_server.is_running()

        second.stop()
        with _listening_on(second.port), pytest.raises(RuntimeError, match="port"):
            second.start()
        assert not second.is_running()
    finally:
        second.destroy()
