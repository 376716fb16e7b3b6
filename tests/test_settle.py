"""How long the coordinator waits after a wake-up before its next pass (`coordinator._settle`)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from backfill.coordinator import BUSY_SETTLE, MAX_SETTLE, _settle
from backfill.results import PassResult
from backfill.states import BackfillState

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


@pytest.mark.parametrize(("queued", "running"), [(0, 0), (1, 0), (0, 1)])
def test_a_lone_try_in_flight_is_decided_at_once(queued: int, running: int) -> None:
    # A chain: the try that woke the coordinator was the only one; nothing else can end.
    assert _settle(replace(LAST, queued=queued, running=running), took=0.5) == 0.0


def test_with_work_queued_for_every_busy_worker_it_waits_at_least_a_pass() -> None:
    just_enough = replace(LAST, queued=2, running=2)
    assert _settle(just_enough, took=0.03) == 0.03
    assert _settle(just_enough, took=5.0) == BUSY_SETTLE


def test_the_fuller_the_queue_the_longer_it_waits_up_to_a_bound() -> None:
    waits = [_settle(replace(LAST, queued=q, running=2), took=0.02) for q in (8, 80, 800)]
    assert waits == [0.02, 0.2, BUSY_SETTLE]


def test_when_the_workers_may_run_dry_it_waits_briefly() -> None:
    starving = replace(LAST, queued=1, running=8)
    assert _settle(starving, took=0.03) == MAX_SETTLE
    assert _settle(starving, took=0.001) == 0.001
