"""The coordinator daemon: drive every backfill that needs a driver, one thread each.

Invariants:
- a backfill needs a driver when it is running (or queued), or cancelled
  with runs never wound down; a paused one needs none;
- one thread per backfill, each with its own `Coordinator`; a thread first
  waits for the backfill's lease, so of several daemons (HA) one drives and
  the others stand by until its lease lapses, and take over within a second
  of that (a SIGKILLed driver renewed it at most a second before). Safety
  never depends on it;
- a paused backfill: the thread driving it releases the lease and ends at
  its next pass (so does a standby's, after one pass that finds it paused).
  Resumed, it is driven by whoever takes the lease first: `backfill resume`
  un-pauses it and takes the free lease in one transaction, so it drives at
  once and the next scan's thread stands by; a `resume` that finds the lease
  held stands by while that coordinator drives;
- `serve(once=True)` drives the backfills that need it now to their end;
- a thread that fails is logged; its backfill is tried again after
  `RETRY_AFTER` (`Drivers.failed` names it);
- a database outage ends nothing: each thread's coordinator retries until
  the database is back, and so does the scan for backfills; each says so
  once in the log when it starts and once when it ends.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from datetime import datetime
from typing import TYPE_CHECKING

from backfill.config import Settings
from backfill.engine.coordinator import Coordinator
from backfill.engine.metrics import NO_METRICS, Metrics
from backfill.errors import BackfillError, Unreachable
from backfill.model.discovery import DagBag, load_dags
from backfill.model.states import BackfillState
from backfill.store import reads, status
from backfill.store.reconnect import Outage, Reconnect

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

log = logging.getLogger("backfill.engine.coordinator")

SCAN_INTERVAL = 2.0  # seconds between looks for backfills that need a driver
RETRY_AFTER = 30.0  # seconds before a backfill whose thread failed is tried again


class Drivers:
    """One thread per backfill being driven by this process."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        stop: threading.Event,
        *,
        metrics: Metrics = NO_METRICS,
    ) -> None:
        self._engine = engine
        self._settings = settings
        self._stop = stop
        self._metrics = metrics  # shared by the threads' coordinators (thread-safe)
        self._threads: dict[int, threading.Thread] = {}
        self._not_before: dict[int, float] = {}  # backfill id -> monotonic time
        self.failed: set[int] = set()  # backfills whose thread ended in an error

    def needing_a_driver(self) -> dict[int, str]:
        """Backfill id -> dag_id of every backfill that needs a driver now."""
        with reads.reading(self._engine) as conn:
            return status.needing_a_driver(conn)

    def start_new(self, wanted: dict[int, str]) -> int:
        """Start a thread for each wanted backfill not driven yet; how many started."""
        now = time.monotonic()
        new = [
            bid
            for bid in wanted
            if bid not in self._threads and self._not_before.get(bid, 0.0) <= now
        ]
        if not new:
            return 0
        dags = load_dags(self._settings.dags_folder)  # once per scan that needs it
        for bid in new:
            thread = threading.Thread(
                target=self._drive, args=(bid, wanted[bid], dags), name=f"backfill-{bid}"
            )
            self._threads[bid] = thread
            thread.start()
        return len(new)

    def reap(self) -> int:
        """Forget finished threads; how many are still running."""
        for bid, thread in list(self._threads.items()):
            if not thread.is_alive():
                thread.join()
                del self._threads[bid]
        return len(self._threads)

    def join(self) -> None:
        for thread in self._threads.values():
            thread.join()
        self._threads.clear()

    def _drive(self, backfill_id: int, dag_id: str, dags: DagBag) -> None:
        coordinator: Coordinator | None = None
        try:
            coordinator = Coordinator(
                self._engine,
                self._settings,
                dags.get(dag_id),
                on_notice=lambda text: log.warning("backfill %s: %s", backfill_id, text),
                metrics=self._metrics,
            )

            holders: set[str] = set()

            def on_wait(owner: str, until: datetime) -> None:
                if owner not in holders:  # once per holder: a standby waits quietly
                    holders.add(owner)
                    log.info("backfill %s: standing by, %s holds its lease", backfill_id, owner)

            if not coordinator.wait_for_lease(backfill_id, on_wait=on_wait, stop=self._stop):
                return  # stopped, or the coordinator it stood by for ended the backfill
            log.info("backfill %s (%s): driving it", backfill_id, dag_id)
            outcome = coordinator.drive(backfill_id, stop=self._stop, leave_paused=True)
            note = "; lease released" if outcome.state is BackfillState.PAUSED else ""
            log.info("backfill %s (%s): %s%s", backfill_id, dag_id, outcome.state.value, note)
        except Unreachable as exc:  # retried until stopped: only a stop ends it so
            log.info("backfill %s (%s): stopped; %s", backfill_id, dag_id, exc)
        except BackfillError as exc:  # e.g. the DAG file changed or is gone
            log.error("backfill %s (%s): %s", backfill_id, dag_id, exc)
            self._failed(backfill_id)
        except Exception:  # a thread's edge: log it, keep the other backfills going
            log.exception("backfill %s (%s): coordinator error", backfill_id, dag_id)
            self._failed(backfill_id)
        finally:
            if coordinator is not None:
                coordinator.close()

    def _failed(self, backfill_id: int) -> None:
        self.failed.add(backfill_id)
        self._not_before[backfill_id] = time.monotonic() + RETRY_AFTER  # then try again


def serve(drivers: Drivers, stop: threading.Event, *, once: bool) -> None:
    """Drive what needs a driver until `stop` (with `once`: what needs one now, to its end)."""
    outage = Outage("database", lambda text: log.warning("looking for backfills: %s", text))
    scan = Reconnect(budget=None, outage=outage, stop=stop)
    if once:
        with contextlib.suppress(Unreachable):  # stopped while the database was down
            drivers.start_new(scan.run(drivers.needing_a_driver))
        while drivers.reap() and not stop.wait(0.2):
            pass
        return
    while not stop.is_set():
        try:
            drivers.reap()
            drivers.start_new(scan.run(drivers.needing_a_driver))
        except Unreachable:
            break  # stopped while the database was down
        except Exception:  # the service's edge: log it, look again later
            log.exception("looking for backfills to drive failed; trying again")
        stop.wait(SCAN_INTERVAL)
