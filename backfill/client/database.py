"""One engine on the metadata DB, opened on first use: a `Client`'s, and the web
process's (shared by its requests' threads).

Invariants:
- reads never create the embedded database: without one, there are no
  backfills yet (as for `backfill list`); the first write creates it, as
  `backfill create` does, and every later call shares that engine;
- reads are one consistent snapshot each (`store.reads.reading`); writes are
  one transaction each.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.engine import Connection, Engine

from backfill.config import Settings
from backfill.store import db, reads
from backfill.store.errors import BackfillNotFound


class Database:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._engine: Engine | None = None
        self._lock = threading.Lock()

    def engine(self, *, create: bool) -> Engine | None:
        """The engine; None if the embedded database does not exist and `create` is false."""
        with self._lock:
            if self._engine is None:
                self._engine = db.open_engine(self.settings, create=create)
            return self._engine

    @contextmanager
    def reading(self) -> Iterator[Connection | None]:
        """A read-only snapshot; None when there is no database yet."""
        engine = self.engine(create=False)
        if engine is None:
            yield None
            return
        with reads.reading(engine) as conn:
            yield conn

    @contextmanager
    def reading_about(self, backfill_id: int) -> Iterator[Connection]:
        """A read-only snapshot, to read of backfill `backfill_id`: without a database
        there is no such backfill (`BackfillNotFound`)."""
        with self.reading() as conn:
            if conn is None:
                raise BackfillNotFound(backfill_id)
            yield conn

    def engine_about(self, backfill_id: int) -> Engine:
        """The engine, to act on backfill `backfill_id`; `BackfillNotFound` without one."""
        engine = self.engine(create=False)
        if engine is None:
            raise BackfillNotFound(backfill_id)
        return engine

    @contextmanager
    def writing_about(self, backfill_id: int) -> Iterator[Connection]:
        """One transaction, to act on backfill `backfill_id`: without a database there is
        no such backfill (`BackfillNotFound`), and none is created."""
        with self.engine_about(backfill_id).begin() as conn:
            yield conn

    def close(self) -> None:
        with self._lock:
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None
