"""When a failed try is retried (AIRFLOW_SEMANTICS.md section 4)."""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pendulum
import pytest
from hypothesis import given
from hypothesis import strategies as st

from backfill.model.task_options import TaskOptions
from backfill.planning.retry import MAX_RETRY_DELAY, retry_delay, should_retry

DATE = pendulum.datetime(2024, 1, 1, tz="UTC")


def delay(try_number: int, *, logical_date: datetime = DATE, **options: Any) -> timedelta:
    return retry_delay(
        TaskOptions(**options),
        try_number=try_number,
        dag_id="d",
        task_id="t",
        logical_date=logical_date,
    )


@pytest.mark.parametrize("try_number", [1, 2, 7, 50])
def test_linear_waits_retry_delay_uncapped(try_number: int) -> None:
    assert delay(try_number, retry_delay=timedelta(seconds=42)) == timedelta(seconds=42)
    # Airflow caps only the exponential branch.
    assert delay(try_number, retry_delay=timedelta(days=3), max_retry_delay=timedelta(hours=1)) == (
        timedelta(days=3)
    )


@pytest.mark.parametrize("try_number", [1, 2, 3, 4, 5, 6])
def test_exponential_stays_within_m_and_2m_minus_1(try_number: int) -> None:
    m = 10 * 2 ** (try_number - 1)
    for day in range(30):  # many keys: the spread covers the range, never leaves it
        got = delay(
            try_number,
            logical_date=DATE.add(days=day),
            retry_delay=timedelta(seconds=10),
            retry_exponential_backoff=True,
        )
        assert timedelta(seconds=m) <= got <= timedelta(seconds=2 * m - 1)


def test_exponential_matches_airflows_formula() -> None:
    key = f"d#t#{DATE.isoformat()}#3"
    m = math.ceil(7 * 2**2)
    expected = m + int(hashlib.sha1(key.encode()).hexdigest(), 16) % m
    got = delay(3, retry_delay=timedelta(seconds=7), retry_exponential_backoff=True)
    assert got == timedelta(seconds=expected)


def test_exponential_spreads_keys_but_is_stable_for_one() -> None:
    options: dict[str, Any] = {
        "retry_delay": timedelta(minutes=5),
        "retry_exponential_backoff": True,
    }
    delays = {delay(2, logical_date=DATE.add(days=d), **options) for d in range(20)}
    assert len(delays) > 1  # not a stampede
    first = delay(2, logical_date=DATE.add(days=3), **options)
    assert all(delay(2, logical_date=DATE.add(days=3), **options) == first for _ in range(5))
    # Same instant in another timezone object: the same key, the same delay.
    same = datetime(2024, 1, 4, tzinfo=UTC)
    assert delay(2, logical_date=same, **options) == first


@pytest.mark.parametrize("base", [timedelta(0), timedelta(milliseconds=400)])
def test_exponential_waits_at_least_a_second(base: timedelta) -> None:
    got = delay(1, retry_delay=base, retry_exponential_backoff=True)
    assert got == timedelta(seconds=1)


@pytest.mark.parametrize("try_number", [18, 40, 64, 2000])
def test_exponential_is_capped_at_a_day(try_number: int) -> None:
    got = delay(try_number, retry_delay=timedelta(minutes=5), retry_exponential_backoff=True)
    assert got == MAX_RETRY_DELAY == timedelta(days=1)


def test_exponential_is_capped_at_max_retry_delay() -> None:
    options: dict[str, Any] = {
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=2),
    }
    assert delay(1, **options) < timedelta(minutes=2)  # 30..59 s: under the cap
    assert delay(5, **options) == timedelta(minutes=2)  # 480..959 s: capped


@given(
    try_number=st.integers(min_value=1, max_value=10_000),
    seconds=st.floats(min_value=0, max_value=10**6, allow_nan=False),
)
def test_exponential_is_always_between_a_second_and_a_day(try_number: int, seconds: float) -> None:
    got = delay(try_number, retry_delay=timedelta(seconds=seconds), retry_exponential_backoff=True)
    assert timedelta(seconds=1) <= got <= MAX_RETRY_DELAY


@pytest.mark.parametrize(
    ("try_number", "max_tries", "expected"),
    [(1, 0, False), (1, 1, True), (2, 1, False), (1, 3, True), (3, 3, True), (4, 3, False)],
)
def test_should_retry_while_a_try_is_left(try_number: int, max_tries: int, expected: bool) -> None:
    assert should_retry(try_number=try_number, max_tries=max_tries) is expected
