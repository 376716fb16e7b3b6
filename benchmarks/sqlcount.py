"""Counting the SQL a process sends, through SQLAlchemy's class-level events.

Invariants:
- `install()` listens on the `Engine` and `Pool` classes, so every engine of
  the process is counted, including engines created after it was called;
- `statements` counts cursor executions: one per statement the application
  sends (an executemany batch counts once per round trip SQLAlchemy makes).
  The BEGIN/COMMIT psycopg2 adds around a transaction and the pool's
  pre-ping are not statements of the application: pre-pings (one round trip
  per checkout of a pooled connection, on engines that ping) are counted
  where the dialect sends them, and reported apart;
- counts only grow, and are read under a lock (heartbeat threads execute too).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.engine.default import DefaultDialect
from sqlalchemy.pool import Pool


@dataclass(frozen=True)
class Counts:
    statements: int = 0
    checkouts: int = 0
    connects: int = 0
    pings: int = 0  # pre-ping round trips

    def __sub__(self, other: Counts) -> Counts:
        return Counts(
            self.statements - other.statements,
            self.checkouts - other.checkouts,
            self.connects - other.connects,
            self.pings - other.pings,
        )


class SQLCounter:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._statements = 0
        self._checkouts = 0
        self._connects = 0
        self._pings = 0
        self._installed = False

    def install(self) -> SQLCounter:
        if not self._installed:
            event.listen(Engine, "before_cursor_execute", self._on_statement)
            event.listen(Pool, "checkout", self._on_checkout)
            event.listen(Pool, "connect", self._on_connect)
            self._count_pings()
            self._installed = True
        return self

    def _count_pings(self) -> None:
        # The pool's pre-ping goes through this method of every dialect; SQLAlchemy
        # has no event for it. Wrapped once per process, in the bench only.
        ping = DefaultDialect._do_ping_w_event

        def counted(dialect: DefaultDialect, dbapi_connection: Any) -> bool:
            with self._lock:
                self._pings += 1
            return ping(dialect, dbapi_connection)

        DefaultDialect._do_ping_w_event = counted  # type: ignore[method-assign,assignment]

    def read(self) -> Counts:
        with self._lock:
            return Counts(self._statements, self._checkouts, self._connects, self._pings)

    def _on_statement(self, *_args: Any) -> None:
        with self._lock:
            self._statements += 1

    def _on_checkout(self, *_args: Any) -> None:
        with self._lock:
            self._checkouts += 1

    def _on_connect(self, *_args: Any) -> None:
        with self._lock:
            self._connects += 1
