"""How an idle coordinator learns that there is work: LISTEN/NOTIFY, or a poll.

On PostgreSQL the journal trigger NOTIFYs `schema.JOURNAL_CHANNEL` when a
try leaves `running` (schema.py). A `Listener` holds one dedicated
connection LISTENing on it and select()s on its socket, so a coordinator
runs its next pass within milliseconds of a worker's finish, not a poll
interval later. SQLite has no notifications: `Poller` only sleeps.

Invariants:
- LISTEN is issued when the waker is opened, before the first pass, so a
  notification sent while a pass runs is kept by the server and ends the
  next wait at once: a wake-up can be early, never lost;
- every wait is bounded by its timeout (the poll fallback), so a lost or
  broken listener connection degrades to polling; it is re-opened later;
- `wait` returns early when the caller's stop event is set;
- the connection string (with its password) is never printed or logged.
"""

from __future__ import annotations

import contextlib
import logging
import select
import threading
import time
from typing import TYPE_CHECKING, Any, Protocol

import psycopg2  # type: ignore[import-untyped]  # no stubs in the dev extra
import psycopg2.extensions  # type: ignore[import-untyped]

from backfill.store.db import liveness
from backfill.store.schema import JOURNAL_CHANNEL

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)

STOP_CHECK = 0.1  # seconds: how often a wait on a socket looks at the stop event
RECONNECT_AFTER = 5.0  # seconds between attempts to re-open a broken listener
CONNECT_TIMEOUT = 10  # seconds


class Waker(Protocol):
    def wait(self, timeout: float, stop: threading.Event) -> int:
        """Block up to `timeout` s; how many notifications woke it (each a try that
        ended; 0: the timeout passed, or the stop event was set)."""
        ...

    def drain(self) -> None:
        """Forget the notifications received so far."""
        ...

    def close(self) -> None: ...


def open_waker(engine: Engine, dead_after: float = 60.0) -> Waker:
    """A `Listener` on PostgreSQL, a `Poller` anywhere else. `dead_after`: as for
    `db.create_engine_for`: a listener cut off from its server reconnects after it."""
    if engine.dialect.name == "postgresql":
        # The engine's own URL names the psycopg2 driver; libpq wants plain postgresql://.
        dsn = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        return Listener(dsn, JOURNAL_CHANNEL, liveness(dead_after))
    return Poller()


class Poller:
    def wait(self, timeout: float, stop: threading.Event) -> int:
        stop.wait(max(0.0, timeout))
        return 0

    def drain(self) -> None:
        pass

    def close(self) -> None:
        pass


class Listener:
    """LISTEN on `channel` over a dedicated autocommit psycopg2 connection."""

    def __init__(self, dsn: str, channel: str, options: dict[str, Any]) -> None:
        self._dsn = dsn
        self._channel = channel
        self._options = options  # libpq parameters (`db.liveness`)
        self._conn: Any = None
        self._failed_at: float | None = None
        self._connect()

    def _connect(self) -> None:
        try:
            conn = psycopg2.connect(
                self._dsn,
                connect_timeout=CONNECT_TIMEOUT,
                application_name="backfill-listener",
                **self._options,
            )
            conn.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
            with conn.cursor() as cursor:
                cursor.execute(f"LISTEN {self._channel}")
        except psycopg2.Error as exc:
            self._broken(exc)
            return
        self._conn, self._failed_at = conn, None

    def _broken(self, exc: BaseException) -> None:
        # psycopg2's message names host and database, never the password. Not a
        # warning: polling loses no work, and a database outage is reported by
        # the statements that need the database (`store.reconnect.Outage`).
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        log.info("LISTEN connection unavailable, polling instead: %s", reason)
        self.close()
        self._failed_at = time.monotonic()

    def wait(self, timeout: float, stop: threading.Event) -> int:
        if self._conn is None and (
            self._failed_at is None or time.monotonic() - self._failed_at >= RECONNECT_AFTER
        ):
            self._connect()
        deadline = time.monotonic() + max(0.0, timeout)
        while not stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return 0
            if self._conn is None:
                stop.wait(min(remaining, STOP_CHECK))
                continue
            woken = self._poll(min(remaining, STOP_CHECK))
            if woken:
                return woken
        return 0

    def drain(self) -> None:
        if self._conn is not None:
            self._poll(0.0)

    def _poll(self, timeout: float) -> int:
        """Wait up to `timeout` for notifications; drain them all; how many came."""
        try:
            if not self._conn.notifies:
                readable, _, _ = select.select([self._conn], [], [], timeout)
                if not readable:
                    return 0
                self._conn.poll()
            woken = len(self._conn.notifies)
            self._conn.notifies.clear()
            return woken
        except (psycopg2.Error, OSError) as exc:
            self._broken(exc)
            return 0

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg2.Error):  # already broken: nothing to release
                conn.close()
