"""How long the coordinator waits after a wake-up before its next pass (`settling.settle`)."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest

from backfill.engine.settling import BUSY_SETTLE, MAX_SETTLE, settle
from backfill.model.states import BackfillState
from backfill.planning.results import PassResult

LAST = PassResult(
    state=BackfillState.RUNNING,
    changed=True,
    again=False,
    dispatched=0,
    reaped=0,
    redispatched=0,
    lease_held=True,
    waiting={},
    deadlock=None,
    next_due=None,
)


class Finishes:
    """A waker whose wait returns the tries that end meanwhile: `ends` per call."""

    def __init__(self, *ends: int) -> None:
        self.ends = list(ends)
        self.waits: list[float] = []

    def wait(self, timeout: float, stop: threading.Event) -> int:
        self.waits.append(timeout)
        if self.ends:
            return self.ends.pop(0)
        stop.wait(timeout)  # nothing more ends: the whole timeout passes
        return 0

    def drain(self) -> None:
        pass

    def close(self) -> None:
        pass


def _settle(waker: Finishes, *, queued: int, running: int, ended: int = 1) -> float:
    began = time.monotonic()
    last = replace(LAST, queued=queued, running=running)
    settle(last, waker, threading.Event(), ended=ended)
    return time.monotonic() - began


@pytest.mark.parametrize(("queued", "running"), [(0, 0), (1, 0), (0, 1)])
def test_a_lone_try_in_flight_is_decided_at_once(queued: int, running: int) -> None:
    # A chain: the try that woke the coordinator was the only one; nothing else can end.
    waker = Finishes()
    _settle(waker, queued=queued, running=running)
    assert waker.waits == []


def test_it_waits_until_half_the_queued_tries_have_ended() -> None:
    waker = Finishes(3, 4, 5, 100)
    _settle(waker, queued=40, running=2, ended=1)
    assert len(waker.waits) == 4  # 1 + 3 + 4 + 5 = 13 < 20; the fourth wait ends it
    assert waker.waits[0] <= BUSY_SETTLE


def test_with_work_queued_it_waits_no_longer_than_its_bound() -> None:
    took = _settle(Finishes(), queued=40, running=2)
    assert BUSY_SETTLE <= took < BUSY_SETTLE + 0.5


def test_when_a_worker_may_run_dry_it_waits_briefly() -> None:
    waker = Finishes()
    assert _settle(waker, queued=6, running=8) < BUSY_SETTLE / 2
    assert waker.waits == [pytest.approx(MAX_SETTLE, abs=0.005)]
