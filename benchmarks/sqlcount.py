"""Counting the SQL a process sends, through SQLAlchemy's class-level events.

Invariants:
- `install()` listens on the `Engine` and `Pool` classes, so every engine of
  the process is counted, including engines created after it was called;
- `statements` counts cursor executions: one per statement the application
  sends (an executemany batch counts once per round trip SQLAlchemy makes).
  The BEGIN/COMMIT psycopg2 adds around a transaction and the pool's
  pre-ping are not statements of the application: a pre-ping is one
  `SELECT 1` per checkout of a pooled connection that is not brand new,
  i.e. `checkouts - connects`, reported apart;
- counts only grow, and are read under a lock (heartbeat threads execute too).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.pool import Pool


@dataclass(frozen=True)
class Counts:
    statements: int = 0
    checkouts: int = 0
    connects: int = 0

    def __sub__(self, other: Counts) -> Counts:
        return Counts(
            self.statements - other.statements,
            self.checkouts - other.checkouts,
            self.connects - other.connects,
        )

    @property
    def pings(self) -> int:
        """Pre-ping round trips: a checkout of a connection that was not just opened."""
        return max(0, self.checkouts - self.connects)


class SQLCounter:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._statements = 0
        self._checkouts = 0
        self._connects = 0
        self._installed = False

    def install(self) -> SQLCounter:
        if not self._installed:
            event.listen(Engine, "before_cursor_execute", self._on_statement)
            event.listen(Pool, "checkout", self._on_checkout)
            event.listen(Pool, "connect", self._on_connect)
            self._installed = True
        return self

    def read(self) -> Counts:
        with self._lock:
            return Counts(self._statements, self._checkouts, self._connects)

    def _on_statement(self, *_args: Any) -> None:
        with self._lock:
            self._statements += 1

    def _on_checkout(self, *_args: Any) -> None:
        with self._lock:
            self._checkouts += 1

    def _on_connect(self, *_args: Any) -> None:
        with self._lock:
            self._connects += 1
