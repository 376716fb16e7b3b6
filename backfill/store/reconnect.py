"""Riding out dropped database connections. (store)

Production connections drop: a failover, a pgbouncer restart, an idle
reaper, `pg_terminate_backend`. `Reconnect.run(work)` runs `work`, which
checks out its own connection and owns its transaction, and when it fails
with a disconnect-class error (`is_transient`) runs it again on a fresh
connection after a backoff, until it succeeds, its budget is spent or its
stop event is set; then it raises `Unreachable` (exit 3). Any other error
propagates at once, on the first attempt.

Invariants:
- `work` is safe to run again after an outcome it never heard of: either one
  transaction of compare-and-set statements, which simply decides again from
  what it reads, or one statement that recognises its own earlier success
  (`claims.claim` by its token, `claims.finish` by its journal row). Nothing
  outside the database happens inside `work`: what must follow a commit
  (publishing messages) follows `run`, once the commit is known to have landed;
- SQLAlchemy invalidates a connection that raised a disconnect error and every
  pooled connection older than it (`pool_pre_ping`, or on an engine without
  it one more attempt, catches the rest), so the next attempt connects afresh;
- the backoff doubles from `FIRST_DELAY` to `MAX_DELAY` with jitter, so a fleet
  of workers does not reconnect in lockstep; the first retry is almost
  immediate, since a dropped connection usually means a live server;
- an `Outage` is told of every failure and success, and says so once when the
  database becomes unreachable and once when it is back, never per attempt
  nor for a lone dropped connection.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

import sqlalchemy as sa

from backfill.errors import Unreachable

T = TypeVar("T")

FIRST_DELAY = 0.05  # seconds before the first retry
MAX_DELAY = 2.0  # seconds: the backoff's ceiling
# How long a worker retries one statement (claim, finish) before giving up on
# it: the message is then acked and the coordinator re-dispatches or reaps the
# try. Drivers (`run`, `resume`, `coordinator`) retry without a budget.
WORKER_BUDGET = 120.0

# SQLSTATEs of a server that is going away or not there yet: class 08
# (connection exception), admin/crash shutdown, "cannot connect now".
_TRANSIENT_CODES = ("08", "57P01", "57P02", "57P03")
# libpq reports a failed connection attempt without a SQLSTATE; these are the
# words of a server that is down, starting, stopping or out of reach. Bad
# credentials or an unknown database are not among them: those do not heal.
_CANNOT_CONNECT = (
    "Connection refused",
    "the database system is",  # ... starting up / shutting down / in recovery mode
    "timeout expired",
    "Connection timed out",
    "Connection reset by peer",
    "No route to host",
    "Network is unreachable",
    "could not translate host name",  # a DNS blip; a typo fails at start instead
    "server closed the connection unexpectedly",
    "terminating connection",
    "too many clients already",
    "remaining connection slots are reserved",
)
# How libpq begins the message of a connection attempt that failed, for any reason.
_CONNECTING = ("connection to server", "could not connect", "could not translate host name")


def is_transient(exc: BaseException) -> bool:
    """Whether `exc` is a disconnect-class error: the same work may succeed on a
    fresh connection (SQLAlchemy's `is_disconnect`, and libpq's failed connects)."""
    if not isinstance(exc, sa.exc.DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    code: str | None = getattr(exc.orig, "pgcode", None)
    if code:
        return code.startswith(_TRANSIENT_CODES)
    if not isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError):
        return False
    return any(marker in str(exc.orig) for marker in _CANNOT_CONNECT)


def is_unreachable(exc: BaseException) -> bool:
    """Whether `exc` says the database cannot be reached: a disconnect-class error,
    or a connection attempt refused for good (unknown role or database, bad password)."""
    return is_transient(exc) or (
        isinstance(exc, sa.exc.OperationalError) and cause(exc).startswith(_CONNECTING)
    )


def is_database_error(exc: BaseException) -> bool:
    """Whether `exc` is an error the database (or its driver) raised."""
    return isinstance(exc, sa.exc.DBAPIError)


def cause(exc: BaseException) -> str:
    """The driver's own first line, without SQLAlchemy's decorations."""
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines()
    return lines[0].strip() if lines else type(orig).__name__


@dataclass
class Outage:
    """Whether `what` (the database, the broker) is reachable, said once per outage.

    Up to `tolerated` failures in a row are no outage and are not reported (a
    lone dropped connection, which the next attempt replaces). At the next,
    `notify` receives "database unreachable since 12:03:01, retrying (cause)",
    the time being the first failure's; at the next success, "database
    reachable again after 6s". Thread-safe: the threads of one process may
    share it.
    """

    what: str
    notify: Callable[[str], None]
    tolerated: int = 1
    since: datetime | None = None  # the first of the failures in a row
    failures: int = 0  # in a row
    last: tuple[datetime, datetime] | None = None  # (began, ended) of the latest outage
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            since = self.since = self.since or _now()
            self.failures += 1
            if self.failures != self.tolerated + 1:
                return
        self.notify(f"{self.what} unreachable since {since:%H:%M:%S}, retrying ({cause(exc)})")

    @property
    def down(self) -> bool:
        """Whether an outage is in progress (more failures in a row than tolerated)."""
        with self._lock:
            return self.failures > self.tolerated

    def latest(self) -> tuple[datetime, datetime | None] | None:
        """(began, ended) of the outage in progress (ended None) or else of the last one."""
        with self._lock:
            if self.since is not None:
                return self.since, None
            return self.last

    def ok(self) -> None:
        with self._lock:
            began, said = self.since, self.failures > self.tolerated
            if began is None:
                return
            ended = _now()
            self.since, self.failures = None, 0
            if said:
                self.last = (began, ended)
        if said:
            self.notify(f"{self.what} reachable again after {(ended - began).total_seconds():.0f}s")


def _now() -> datetime:
    return datetime.now().astimezone()  # local time: what the operator's clock says


@dataclass(frozen=True, kw_only=True)
class Reconnect:
    """Runs a unit of database work again on a fresh connection after a disconnect.

    `budget`: seconds of retrying before `Unreachable`; None retries until
    `stop` is set. `target` names the database in messages (`db.describe`).
    """

    target: str = "the database"
    budget: float | None = WORKER_BUDGET
    outage: Outage | None = None
    stop: threading.Event | None = None

    def run(self, work: Callable[[], T]) -> T:
        failing_since: float | None = None
        delay = FIRST_DELAY
        while True:
            try:
                result = work()
            except sa.exc.DBAPIError as exc:
                if not is_transient(exc):
                    raise
                if self.outage is not None:
                    self.outage.failed(exc)
                failing_since = failing_since or time.monotonic()
                pause = random.uniform(delay / 2, delay)
                spent = time.monotonic() - failing_since
                if self.budget is not None and spent + pause > self.budget:
                    raise Unreachable(
                        f"cannot reach {self.target} (gave up after {spent:.0f}s): {cause(exc)}"
                    ) from exc
                if self._stopped(pause):
                    raise Unreachable(
                        f"cannot reach {self.target} (stopped while retrying): {cause(exc)}"
                    ) from exc
                delay = min(delay * 2, MAX_DELAY)
                continue
            if self.outage is not None:
                self.outage.ok()
            return result

    def _stopped(self, pause: float) -> bool:
        if self.stop is None:
            time.sleep(pause)
            return False
        return self.stop.wait(pause)
