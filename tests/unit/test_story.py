"""`planning.story`: when a driver's report is worth writing, what it keeps, and the pace
read back from it (pure: time is passed in)."""

from __future__ import annotations

from datetime import timedelta

import pendulum

from backfill.model.states import BackfillState
from backfill.planning.results import PassResult, TIKey
from backfill.planning.story import KEYS_PER_REASON, SAMPLE_EVERY, SAMPLES, Story, pace

T0 = pendulum.datetime(2024, 1, 1, tz="UTC")


def key(i: int) -> TIKey:
    date = T0 + timedelta(days=i)
    return TIKey(dag_id="d", task_id="t", run_id=f"r{i}", logical_date=date, try_number=0)


def result(waiting: dict[str, int], deadlock: dict[str, int] | None = None) -> PassResult:
    def groups(counts: dict[str, int]) -> dict[str, tuple[TIKey, ...]]:
        return {reason: tuple(key(i) for i in range(n)) for reason, n in counts.items()}

    return PassResult(
        state=BackfillState.RUNNING,
        changed=True,
        again=False,
        dispatched=0,
        reaped=0,
        redispatched=0,
        lease_held=True,
        waiting=groups(waiting),
        deadlock=None if deadlock is None else groups(deadlock),
        next_due=None,
    )


def test_a_report_is_due_when_its_reasons_change_or_a_sample_is_due() -> None:
    story = Story()
    first = result({"pool full": 3})
    assert story.due(first, T0)
    story.report(first, finished=0, now=T0)
    assert not story.due(result({"pool full": 3}), T0 + timedelta(seconds=1))
    assert story.due(result({"pool full": 4}), T0 + timedelta(seconds=1))  # a count changed
    assert story.due(result({"pool full": 3}, {"cycle": 1}), T0 + timedelta(seconds=1))
    assert story.due(first, T0 + timedelta(seconds=SAMPLE_EVERY))


def test_a_report_keeps_exact_counts_capped_keys_and_the_last_samples() -> None:
    story = Story()
    many = KEYS_PER_REASON + 7
    report = {}
    for i in range(SAMPLES + 5):
        at = T0 + timedelta(seconds=SAMPLE_EVERY * i)
        report = story.report(result({"held": many}), finished=10 * i, now=at)
    assert report["waiting"]["held"]["count"] == many
    assert len(report["waiting"]["held"]["tis"]) == KEYS_PER_REASON
    assert report["deadlock"] is None
    assert len(report["samples"]) == SAMPLES
    assert report["samples"][-1] == [
        (T0 + timedelta(seconds=SAMPLE_EVERY * (SAMPLES + 4))).isoformat(),
        10 * (SAMPLES + 4),
    ]


def test_pace_is_the_rate_over_the_samples_and_the_eta_of_what_is_left() -> None:
    samples = [[T0.isoformat(), 100], [(T0 + timedelta(seconds=60)).isoformat(), 160]]
    assert pace({"samples": samples}, left=120) == (60.0, 120.0)
    assert pace({"samples": samples}, left=0) == (60.0, 0.0)
    assert pace({"samples": samples[:1]}, left=5) == (None, None)
    assert pace(None, left=5) == (None, None)
    stalled = [[T0.isoformat(), 100], [(T0 + timedelta(seconds=60)).isoformat(), 100]]
    assert pace({"samples": stalled}, left=5) == (0.0, None)


def test_a_broker_outage_is_news_and_is_told_with_its_start() -> None:
    story = Story()
    quiet = result({"pool full": 1})
    story.report(quiet, finished=0, now=T0)
    down_since = T0 + timedelta(seconds=1)
    assert story.due(quiet, T0 + timedelta(seconds=2), down_since)  # an outage began
    report = story.report(
        quiet, finished=0, now=T0 + timedelta(seconds=2), broker_down_since=down_since
    )
    assert report["broker_down_since"] == down_since.isoformat()
    assert not story.due(quiet, T0 + timedelta(seconds=3), down_since)
    assert story.due(quiet, T0 + timedelta(seconds=3))  # and ended
