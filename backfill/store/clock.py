"""The database's clock: the one clock that stamps compared across hosts are read on. (store)

A worker stamps its try's heartbeats and a coordinator on another host compares
them with a cutoff; coordinators compare each other's lease expiry. On each
host's own wall clock, a worker whose clock runs behind has its live tries
reaped, one whose clock runs ahead is never reaped, and a coordinator ahead of
the others takes a live lease. So these stamps are all on the database server's
clock: PostgreSQL's `now()` (its transaction's start). SQLite is embedded: its
processes share one machine and its one clock, which is the one they read.

A host reads the server's clock when it can do so in a statement it makes anyway
(a claim stamps itself with `SERVER_NOW`), and in between carries the instant
it read with its own monotonic clock (`Anchored`), which a jump of the wall
clock (an NTP step, a hand-set date) does not move.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pendulum
import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from backfill.store.schema import UTCDateTime


class ServerNow(FunctionElement[datetime]):
    """The database server's clock in a statement: PostgreSQL's `now()`. SQLite has none
    worth reading (second precision, and the same clock as its callers'): NULL there,
    so a statement takes `coalesce(:given, SERVER_NOW)` and SQLite callers give theirs."""

    type = UTCDateTime()
    inherit_cache = True
    name = "server_now"


@compiles(ServerNow)
def _server_now(element: ServerNow, compiler: SQLCompiler, **kw: Any) -> str:
    return "now()"


@compiles(ServerNow, "sqlite")
def _no_server_now(element: ServerNow, compiler: SQLCompiler, **kw: Any) -> str:
    return "NULL"


def here(conn: Connection, given: datetime | None) -> datetime | None:
    """`given`, else what a statement stamps itself with: None (`ServerNow`) on a
    server, this machine's clock on SQLite."""
    if given is not None or conn.dialect.name == "postgresql":
        return given
    return pendulum.now("UTC")


def read(conn: Connection) -> datetime:
    """The database's clock now: the server's, or on SQLite this machine's."""
    if conn.dialect.name != "postgresql":
        return pendulum.now("UTC")
    return pendulum.instance(conn.execute(sa.select(ServerNow())).scalar_one())


@dataclass(frozen=True)
class Anchored:
    """The database's clock carried from `at`, an instant read off it, by this host's
    monotonic clock: a jump of the wall clock here moves neither."""

    at: datetime
    mono: float = field(default_factory=time.monotonic)

    def now(self) -> datetime:
        return self.at + timedelta(seconds=time.monotonic() - self.mono)

    def age(self) -> float:
        return time.monotonic() - self.mono
