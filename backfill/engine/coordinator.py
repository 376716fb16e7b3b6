"""The coordinator: drives one backfill to its end, pass after pass.

A pass (`backfill.engine.passes`) runs in ONE transaction and, once committed,
publishes one Celery message per TI try it queued or found lost. A pass that
may decide more at once (it started runs, or ended TIs without running them)
is followed at once by another; otherwise the coordinator waits for a
wake-up (`backfill.store.wakeup`: a worker's finish NOTIFYs on PostgreSQL; a short
poll on SQLite), never past the earliest due retry.

Invariants:
- safety never depends on the lease: passes over one backfill serialise on
  its row lock, and every transition is compare-and-set; the lease (renewed
  about once a second, lapsing after `heartbeat_timeout`) says who drives, so
  that `backfill resume` waits for a dead driver's lease. A pass plans only
  while its coordinator holds the lease (`exclusive`, the default): a driver
  cut off past the lease's time to live finds, when it comes back, that
  another took over, and stands by (`wait_for_lease`) instead of driving
  beside it; it drives again only if the lease comes free;
- a paused backfill is not dispatched, and nothing of it is recovered
  (reaped, re-sent): `drive` waits for resume or cancel, keeping the lease
  (`backfill run`), or with `leave_paused` returns at once, releasing it (the
  daemon: `backfill resume` then takes the lease without waiting for it to
  lapse). A cancelled backfill is wound down, and `drive` returns once its
  running tries have ended (or been reaped) and its runs with them;
- `drive` returns when the backfill ends, or when `stop` is set: then it
  releases the lease and leaves everything else as it is, resumable;
- `wait_for_lease` returns once this coordinator holds the lease, or the
  backfill ended success or failed (a driver it waited for finished it: no
  lease is taken; a cancelled one may still need winding down);
- the coordinator rides out database and broker outages: every transaction
  is retried on a fresh connection until it succeeds or `stop` is set
  (`store.reconnect`), and a pass publishes only after its commit is known to
  have landed (an unknown commit's messages are re-sent as lost ones after
  the queued timeout). Each outage is said once as it starts and once as it
  ends (`on_notice`, else the log);
- after an outage of its own, the coordinator reaps no try that went silent
  with it for a whole heartbeat timeout after it ends: the workers lost the
  database too, and need that long to beat again;
- a pass's time, the reaping cutoff and the lease's expiry are on the
  database's clock (`store.clock`), like the workers' heartbeats they are
  compared with: no host's wall clock decides who is dead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, TypeVar

import pendulum

from backfill.config import Settings
from backfill.engine import run_callbacks, telling
from backfill.engine.dispatch import Dispatcher, Publisher
from backfill.engine.dispatch_lag import LagWatch
from backfill.engine.errors import DispatchError
from backfill.engine.metrics import NO_METRICS, Metrics
from backfill.engine.passes import Applied, Housekeeping, PassConfig, execute
from backfill.engine.settling import settle
from backfill.engine.telling import result_of, tell
from backfill.model.dag import DAG
from backfill.model.states import BACKFILL_FINISHED, BackfillState
from backfill.planning.results import Outcome, PassResult, Progress, TIKey
from backfill.planning.story import Story
from backfill.store import clock, lease, runs
from backfill.store.db import describe
from backfill.store.errors import BackfillNotFound
from backfill.store.reconnect import Outage, Reconnect
from backfill.store.wakeup import Waker, open_waker

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

__all__ = ["Coordinator", "Outcome", "PassResult", "Progress", "TIKey"]

log = logging.getLogger(__name__)
T = TypeVar("T")

PROGRESS_EVERY = 1.0  # seconds: on_progress is called at least this often
PROGRESS_MIN_GAP = 0.1  # seconds: and at most this often for passes that changed something
# Counting a huge backfill's TIs for the progress takes a while: the gaps above grow
# to this many times the last count's duration, so progress costs at most ~1/10.
PROGRESS_COST_FACTOR = 10
POLL_POSTGRESQL = 1.0  # seconds: the fallback when no notification comes
POLL_SQLITE = 0.2  # seconds: SQLite has no notifications
HOUSEKEEPING_EVERY = 1.0  # seconds: at most this long between lease renewals and recovery
# Ended for good: no lease is taken. (A cancelled backfill may still be winding down.)
NOTHING_TO_DRIVE = frozenset({BackfillState.SUCCESS, BackfillState.FAILED})


class Coordinator:
    """Drives backfills of one DAG. Not thread-safe: one driving thread per instance."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        dag: DAG,
        *,
        owner: str | None = None,
        publisher: Publisher | None = None,
        poll_interval: float | None = None,
        on_notice: Callable[[str], None] | None = None,
        metrics: Metrics = NO_METRICS,
        exclusive: bool = True,
    ) -> None:
        self._engine = engine
        self._settings = settings
        self._dag = dag
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._publisher = publisher
        postgres = engine.dialect.name == "postgresql"
        self._poll = poll_interval or (POLL_POSTGRESQL if postgres else POLL_SQLITE)
        # Lease renewal and recovery (reaping, lost messages) run at most this
        # often: they act on a scale of seconds, while busy passes take milliseconds.
        self._housekeeping_every = timedelta(
            seconds=min(HOUSEKEEPING_EVERY, settings.heartbeat_timeout / 4)
        )
        self._housekept: dict[int, datetime] = {}
        self._db_clock: clock.Anchored | None = None  # see `_clock`
        self._heartbeat_timeout = timedelta(seconds=settings.heartbeat_timeout)
        self._queued_timeout = timedelta(seconds=settings.queued_timeout)
        self._config = PassConfig(
            dag=dag,
            fingerprint=dag.fingerprint,
            owner=self.owner,
            actor=f"coordinator:{self.owner}",
            heartbeat_timeout=self._heartbeat_timeout,
            exclusive=exclusive,
            max_map_length=settings.max_map_length,
        )
        notice = self._notice = on_notice or (lambda text: log.warning("%s", text))
        self._target = describe(engine)
        self._db_outage = Outage("database", notice)
        # Publishing already retried (Celery's policy): a failed batch is an outage.
        self._broker_outage = Outage("broker", notice, tolerated=0)
        self._stop: threading.Event | None = None  # the current drive's: ends retrying
        self._stories: dict[int, Story] = {}  # what `_tell` last told, per backfill
        self._metrics = metrics
        metrics.outages(database=self._db_outage, broker=self._broker_outage)
        self._lag = LagWatch(engine, metrics, dag.dag_id)  # reads nothing without metrics

    def run_pass(self, backfill_id: int, *, now: datetime | None = None) -> PassResult:
        """One pass in one transaction, then publish its messages.

        `now`: the pass's time; by default the clock's at each attempt, since a
        pass retried after an outage must not act on the time it first began.
        """
        self._lag.look(backfill_id, self._retrying)  # about once a second, before the clock
        started = time.monotonic()

        def transaction() -> tuple[Applied, datetime, bool]:
            with self._engine.begin() as conn:
                at = now or self._clock(conn)
                last = self._housekept.get(backfill_id)
                due = last is None or not last <= at < last + self._housekeeping_every
                chores = self._housekeeping(at) if due else None
                applied = execute(conn, backfill_id, self._config, now=at, housekeeping=chores)
            return applied, at, due

        # Retried after a disconnect, the pass decides again from what it reads; a
        # commit that landed unheard-of left its TIs queued, re-sent as lost later.
        applied, at, due = self._retrying(transaction)
        if due:
            self._housekept[backfill_id] = at
        dispatched = self._publish(applied)  # only now is the commit known to have landed
        # The runs this pass's UPDATEs won, and only those: exactly one pass ends a run.
        run_callbacks.fire(self._dag, applied.ended_runs, applied.snapshot)
        self._record(applied, dispatched, time.monotonic() - started)
        return result_of(applied, dispatched, at, dag_id=self._dag.dag_id)

    def _record(self, applied: Applied, dispatched: int, seconds: float) -> None:
        """The pass in the metrics (which record nothing without `--metrics-port`)."""
        metrics, dag_id = self._metrics, self._dag.dag_id
        metrics.pass_took(seconds, dag_id=dag_id)
        metrics.dispatched(dispatched, dag_id=dag_id)
        # Lost messages were re-sent only if the batch went out; else they are found again.
        metrics.redispatched(applied.redispatched if dispatched else 0, dag_id=dag_id)
        metrics.reaped(applied.reaped, dag_id=dag_id)

    def _housekeeping(self, now: datetime) -> Housekeeping:
        return Housekeeping(
            reap_before=self._reap_before(now), redispatch_before=now - self._queued_timeout
        )

    def _clock(self, conn: Connection) -> datetime:
        """The database's clock (`store.clock`), read off the server again once the instant
        last read is a housekeeping period old, and carried in between."""
        anchor = self._db_clock
        if anchor is None or anchor.age() >= self._housekeeping_every.total_seconds():
            anchor = self._db_clock = clock.Anchored(clock.read(conn))
        return anchor.now()

    def _reap_before(self, now: datetime) -> datetime:
        """Reap tries silent since before this: a heartbeat timeout ago, unless this
        coordinator's own database outage ended less than a timeout ago."""
        timeout = self._heartbeat_timeout
        cutoff = now - timeout
        began, ended = self._db_outage.latest() or (None, None)
        if began is not None:  # told on this host's wall clock: moved onto the database's
            shift = now - pendulum.now("UTC")
            began, ended = began + shift, None if ended is None else ended + shift
        if began is None or (ended is not None and now >= ended + timeout):
            return cutoff
        # In an outage or just after one (this very pass may be the attempt that ends
        # it): the workers lost the database with us. Only a try already reapable when
        # it began is reaped now; the others get a whole timeout to beat again.
        return min(cutoff, began - timeout)

    def _retrying(self, work: Callable[[], T]) -> T:
        """`work`, run again on a fresh connection after a disconnect until it
        succeeds or the drive is stopped (`Unreachable`)."""
        outage, stop = self._db_outage, self._stop
        return Reconnect(target=self._target, budget=None, outage=outage, stop=stop).run(work)

    def drive(
        self,
        backfill_id: int,
        *,
        on_progress: Callable[[Progress], None] | None = None,
        stop: threading.Event | None = None,
        leave_paused: bool = False,
    ) -> Outcome:
        """Pass after pass until the backfill ends or `stop` is set, or with `leave_paused`
        until a pass finds it paused (see the module doc). The lease is released on return."""
        stop = self._stop = stop or threading.Event()
        ends = BACKFILL_FINISHED | {BackfillState.PAUSED} if leave_paused else BACKFILL_FINISHED
        waker = open_waker(self._engine, self._settings.heartbeat_timeout)
        try:
            result = self._loop(backfill_id, waker, on_progress, stop, ends)
            self._lag.look(backfill_id, self._retrying, final=True)  # the last claims too
        except BaseException:
            with contextlib.suppress(Exception):  # best effort: the original error matters
                self._release(backfill_id)
            raise
        finally:
            waker.close()
        self._release(backfill_id)
        return self.outcome(backfill_id, result)

    def _loop(
        self,
        backfill_id: int,
        waker: Waker,
        on_progress: Callable[[Progress], None] | None,
        stop: threading.Event,
        ends: frozenset[BackfillState],
    ) -> PassResult:
        reported, cost = float("-inf"), 0.0  # when progress was last reported, what it took
        while True:
            result = self.run_pass(backfill_id)
            if self._deposed(result) and self._stand_by(backfill_id, stop):
                continue  # the lease came free again: this coordinator drives on
            self._tell(backfill_id, result)
            done = result.state in ends and not result.winding_down
            since = time.monotonic() - reported
            every = max(PROGRESS_EVERY, PROGRESS_COST_FACTOR * cost)
            gap = max(PROGRESS_MIN_GAP, PROGRESS_COST_FACTOR * cost)
            if on_progress and (done or since >= every or (result.changed and since >= gap)):
                counted = time.monotonic()
                on_progress(self.progress(backfill_id, result))
                reported = time.monotonic()
                cost = reported - counted
            if done or stop.is_set():
                return result
            if not result.again:
                timeout = self._timeout(result, self._carried(), on_progress is not None)
                woken = waker.wait(timeout, stop)
                if woken:
                    settle(result, waker, stop, ended=woken)
                    waker.drain()  # what came while settling is decided by the next pass
                if stop.is_set():  # no further pass: it could queue tries nobody will run
                    return result

    def _deposed(self, result: PassResult) -> bool:
        """Whether the pass found another coordinator holding the lease, and did nothing."""
        return (
            self._config.exclusive
            and result.state is BackfillState.RUNNING
            and not (result.lease_held)
        )

    def _stand_by(self, backfill_id: int, stop: threading.Event) -> bool:
        """Wait for the lease a successor took: True once held again, False once the
        backfill ended (or `stop`). Said once per successor."""
        told: set[str] = set()

        def on_wait(owner: str, _until: datetime) -> None:
            if owner not in told:
                told.add(owner)
                self._notice(f"{owner} took over the lease: standing by")

        return self.wait_for_lease(backfill_id, on_wait=on_wait, stop=stop)

    def _tell(self, backfill_id: int, result: PassResult) -> None:
        """Keep the pass's story with the backfill for `backfill status` (`telling`)."""
        story = self._stories.setdefault(backfill_id, Story())
        outage = self._broker_outage
        down = outage.latest() if outage.down else None
        since = None if down is None else down[0]
        self._retrying(
            lambda: tell(self._engine, backfill_id, result, story, broker_down_since=since)
        )

    def _carried(self) -> datetime:
        """The database's clock as last read and carried since (this host's before any read)."""
        return pendulum.now("UTC") if self._db_clock is None else self._db_clock.now()

    def _timeout(self, result: PassResult, now: datetime, reporting: bool) -> float:
        timeout = self._poll
        if reporting:
            timeout = min(timeout, PROGRESS_EVERY)
        if result.next_due is not None:
            timeout = min(timeout, max(0.0, (result.next_due - now).total_seconds()))
        return timeout

    def wait_for_lease(
        self,
        backfill_id: int,
        *,
        on_wait: Callable[[str, datetime], None],
        stop: threading.Event | None = None,
    ) -> bool:
        """Block until this coordinator holds the backfill's lease (True), or the backfill
        ended success or failed (no lease is taken then) or `stop` is set (False)."""
        stop = self._stop = stop or threading.Event()
        while not stop.is_set():
            row, epoch, now = self._retrying(lambda: self._take_lease(backfill_id))
            if epoch is not None or row.state in NOTHING_TO_DRIVE:
                return epoch is not None
            expires = row.lease_expires_at or now
            on_wait(row.lease_owner or "?", expires)
            stop.wait(min(1.0, max(0.05, (expires - now).total_seconds() + 0.05)))
        return False

    def _take_lease(self, backfill_id: int) -> tuple[runs.BackfillRow, int | None, datetime]:
        """The backfill's row, the lease epoch if this coordinator now holds it (never when
        there is NOTHING_TO_DRIVE), and the time."""
        ttl = self._heartbeat_timeout
        with self._engine.begin() as conn:
            now = self._clock(conn)
            row = runs.lock_backfill(conn, backfill_id)
            if row is None:
                raise BackfillNotFound(backfill_id)
            if row.state in NOTHING_TO_DRIVE:
                return row, None, now
            epoch = lease.acquire_lease(conn, backfill_id, owner=self.owner, now=now, ttl=ttl)
        return row, epoch, now

    def progress(self, backfill_id: int, last: PassResult | None = None) -> Progress:
        """Counts now; the waiting reasons come from `last`, the last pass."""
        return self._retrying(lambda: telling.progress(self._engine, backfill_id, last))

    def outcome(self, backfill_id: int, last: PassResult | None = None) -> Outcome:
        """The backfill's outcome now; deadlock and waiting come from `last`, the last pass."""
        return self._retrying(lambda: telling.outcome(self._engine, backfill_id, last))

    def close(self) -> None:
        """Release the broker connections of the default publisher."""
        if isinstance(self._publisher, Dispatcher):
            self._publisher.close()

    def _publish(self, applied: Applied) -> int:
        if not applied.messages:
            return 0
        try:
            self._get_publisher().publish(applied.messages)
        except DispatchError as exc:
            # Committed as queued: re-dispatched after BACKFILL_QUEUED_TIMEOUT.
            self._broker_outage.failed(exc)
            return 0
        self._broker_outage.ok()
        return len(applied.messages)

    def _get_publisher(self) -> Publisher:
        if self._publisher is None:
            from backfill.broker.app import make_celery  # Celery loads only when publishing

            self._publisher = Dispatcher(
                make_celery(self._settings), key=self._settings.message_key
            )
        return self._publisher

    def _release(self, backfill_id: int) -> None:
        def transaction() -> None:
            with self._engine.begin() as conn:
                lease.release_lease(conn, backfill_id, owner=self.owner)

        self._retrying(transaction)
