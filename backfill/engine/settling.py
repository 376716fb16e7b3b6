"""How long a coordinator waits after a wake-up before its next pass.

After a wake-up, wait before the next pass, so finishes that arrive together are
decided by one pass, not one each: a pass reads the whole snapshot, so a busy
backfill would otherwise spend the coordinator's CPU (which the workers share on a
small host) re-reading it for every single finish. How long (`settle`):
- not at all when the try that woke it was the only one in flight (a chain:
  nothing else can end, and the next task waits for that pass);
- until half the TIs queued at the last pass have ended (each end is one more
  notification, and frees a worker for a queued TI): the pass then comes while the
  workers still have the other half to run, whatever the tasks' durations;
- at most MAX_SETTLE when fewer TIs are queued than running (a worker may run dry
  any moment), else at most BUSY_SETTLE.
"""

from __future__ import annotations

import threading
import time

from backfill.planning.results import PassResult
from backfill.store.wakeup import Waker

MAX_SETTLE = 0.01  # seconds
BUSY_SETTLE = 1.0  # seconds


def settle(last: PassResult, waker: Waker, stop: threading.Event, *, ended: int) -> None:
    """Wait for more tries to end before the next pass (see MAX_SETTLE); `ended` tries
    have ended since `last`, as told by the wake-up."""
    if last.in_flight <= 1:
        return
    enough = max(1, last.queued // 2)
    budget = MAX_SETTLE if last.queued < last.running else BUSY_SETTLE
    deadline = time.monotonic() + budget
    while ended < enough and not stop.is_set():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        ended += waker.wait(remaining, stop)
