"""Schedules -> logical dates and data intervals: examples, DST, errors and properties.

Pure and fast: no database. The property tests compare cron expansion against
an independent oracle that enumerates matching wall-clock times day by day.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta

import pendulum
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pendulum.tz.timezone import FixedTimezone, Timezone

from backfill.errors import UserError
from backfill.model.dates import parse_cli_date
from backfill.model.errors import BadRange, ScheduleError
from backfill.model.schedule import (
    CronSchedule,
    DataInterval,
    DeltaSchedule,
    parse_schedule,
)

NY = pendulum.timezone("America/New_York")
OWNER = "DAG 'x'"


def local(
    tz: Timezone | FixedTimezone, year: int, month: int, day: int, *time_of_day: int
) -> pendulum.DateTime:
    """The wall time (hour, minute, second; zero if omitted) in `tz`."""
    hour, minute, second = (*time_of_day, 0, 0, 0)[:3]
    return pendulum.instance(datetime(year, month, day, hour, minute, second), tz=tz)


def utc(year: int, month: int, day: int, *time_of_day: int) -> pendulum.DateTime:
    return local(pendulum.UTC, year, month, day, *time_of_day)


def expand(
    schedule: str | timedelta,
    start: pendulum.DateTime,
    end: pendulum.DateTime,
    tz: Timezone | FixedTimezone = pendulum.UTC,
) -> list[DataInterval]:
    return parse_schedule(schedule, tz, owner=OWNER).intervals(start, end)


def logical_dates(intervals: Sequence[DataInterval]) -> list[pendulum.DateTime]:
    return [i.logical_date for i in intervals]


def assert_well_formed(intervals: Sequence[DataInterval], start: datetime, end: datetime) -> None:
    """The invariants every expansion keeps, whatever the schedule."""
    for i in intervals:
        for value in (i.logical_date, i.start, i.end):
            assert isinstance(value, pendulum.DateTime)
            assert value.tzinfo is pendulum.UTC
        assert i.logical_date == i.start < i.end
        assert start <= i.logical_date <= end
    for before, after in itertools.pairwise(intervals):
        assert before.end == after.start
        assert before.logical_date < after.logical_date


def plain(value: datetime) -> datetime:
    """A stdlib UTC datetime: pendulum's differences are Intervals that mix badly with timedelta."""
    u = value.astimezone(UTC)
    return datetime(u.year, u.month, u.day, u.hour, u.minute, u.second, u.microsecond, tzinfo=UTC)


def length(interval: DataInterval) -> timedelta:
    return plain(interval.end) - plain(interval.start)


def days_of(year: int) -> set[date]:
    first = date(year, 1, 1)
    return {first + timedelta(days=n) for n in range((date(year + 1, 1, 1) - first).days)}


# --- Airflow's documented examples and the inclusive range ---------------------------------


def test_airflow_docs_daily_example() -> None:
    # `airflow dags backfill -s 2016-01-01 -e 2016-01-02 example` creates two runs.
    got = expand("@daily", utc(2016, 1, 1), utc(2016, 1, 2))
    assert got == [
        DataInterval(utc(2016, 1, 1), utc(2016, 1, 1), utc(2016, 1, 2)),
        DataInterval(utc(2016, 1, 2), utc(2016, 1, 2), utc(2016, 1, 3)),
    ]


def test_start_off_tick_begins_at_next_tick_and_end_on_tick_is_included() -> None:
    got = expand("0 */6 * * *", utc(2024, 1, 1, 0, 0, 1), utc(2024, 1, 2, 0, 0))
    assert logical_dates(got) == [utc(2024, 1, 1, h) for h in (6, 12, 18)] + [utc(2024, 1, 2)]
    assert got[-1].end == utc(2024, 1, 2, 6)  # the last interval may end after `end`


def test_end_just_before_a_tick_excludes_it() -> None:
    got = expand("@daily", utc(2024, 1, 1), utc(2024, 1, 2).subtract(microseconds=1))
    assert logical_dates(got) == [utc(2024, 1, 1)]


def test_start_with_microseconds_past_a_tick_skips_that_tick() -> None:
    got = expand("@hourly", utc(2024, 1, 1, 5, 0, 0).add(microseconds=1), utc(2024, 1, 1, 7))
    assert logical_dates(got) == [utc(2024, 1, 1, 6), utc(2024, 1, 1, 7)]


def test_single_tick_range_and_reversed_or_tickless_ranges() -> None:
    assert logical_dates(expand("@daily", utc(2024, 1, 1), utc(2024, 1, 1))) == [utc(2024, 1, 1)]
    assert expand("@daily", utc(2024, 1, 2), utc(2024, 1, 1)) == []
    assert expand("@daily", utc(2024, 1, 1, 1), utc(2024, 1, 1, 23)) == []


def test_ranges_past_the_calendar_limits_are_refused() -> None:
    with pytest.raises(BadRange, match="runs past the calendar's limits"):
        expand("@daily", utc(1, 1, 1), utc(1, 1, 3), NY)
    with pytest.raises(BadRange, match="runs past the calendar's limits"):
        expand(timedelta(days=400), utc(9999, 12, 30), utc(9999, 12, 31))


def test_inputs_in_other_timezones_and_naive_inputs_are_honoured() -> None:
    tz = pendulum.timezone("Asia/Kolkata")
    # 2024-01-01T05:30+05:30 is 00:00 UTC: a UTC-daily tick, so it is included.
    aware = expand("@daily", local(tz, 2024, 1, 1, 5, 30), local(tz, 2024, 1, 2, 5, 30))
    assert logical_dates(aware) == [utc(2024, 1, 1), utc(2024, 1, 2)]
    # A naive bound is wall time in the schedule's timezone.
    naive = pendulum.naive(2024, 1, 1)
    got = expand("@daily", naive, naive.add(days=1), tz)
    assert logical_dates(got) == [utc(2023, 12, 31, 18, 30), utc(2024, 1, 1, 18, 30)]


# --- presets and cron in a timezone ----------------------------------------------------------


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        ("@hourly", [utc(2024, 1, 1, h) for h in range(24)] + [utc(2024, 1, 2)]),
        ("@daily", [utc(2024, 1, 1), utc(2024, 1, 2)]),
        ("@midnight", [utc(2024, 1, 1), utc(2024, 1, 2)]),
        ("@weekly", [utc(2024, 1, 7), utc(2024, 1, 14)]),  # Sundays
        ("@monthly", [utc(2024, 1, 1), utc(2024, 2, 1)]),
        ("@quarterly", [utc(2024, 1, 1), utc(2024, 4, 1)]),
        ("@yearly", [utc(2024, 1, 1), utc(2025, 1, 1)]),
        ("@annually", [utc(2024, 1, 1), utc(2025, 1, 1)]),
    ],
)
def test_presets(preset: str, expected: list[pendulum.DateTime]) -> None:
    """A range covering all but the last tick: logical dates, then the last interval's end."""
    schedule = parse_schedule(preset, pendulum.UTC, owner=OWNER)
    start = utc(2024, 1, 1) if preset != "@weekly" else utc(2024, 1, 1, 1)
    got = schedule.intervals(start, expected[-1] - timedelta(microseconds=1))
    assert logical_dates(got) == expected[:-1]
    assert got[-1].end == expected[-1]
    assert schedule.describe() == preset


def test_presets_are_case_insensitive_and_keep_what_was_written() -> None:
    schedule = parse_schedule(" @Daily ", pendulum.UTC, owner=OWNER)
    assert schedule == CronSchedule("0 0 * * *", pendulum.UTC, label="@Daily")
    assert schedule.describe() == "@Daily"


def test_cron_is_read_on_the_dag_wall_clock() -> None:
    kolkata = pendulum.timezone("Asia/Kolkata")
    got = expand("0 9 * * 1-5", local(kolkata, 2024, 1, 5), local(kolkata, 2024, 1, 9, 9), kolkata)
    # Fri 5th, Mon 8th, Tue 9th at 09:00 IST = 03:30 UTC; the weekend is skipped.
    assert logical_dates(got) == [utc(2024, 1, d, 3, 30) for d in (5, 8, 9)]
    assert got[-1].end == utc(2024, 1, 10, 3, 30)
    schedule = parse_schedule("  30  2 * * *", kolkata, owner=OWNER)
    assert schedule.describe() == "30 2 * * *"


def test_cron_follows_summer_time_in_london() -> None:
    london = pendulum.timezone("Europe/London")
    got = expand("0 6 * * *", local(london, 2024, 3, 30), local(london, 2024, 4, 1, 6), london)
    assert logical_dates(got) == [utc(2024, 3, 30, 6), utc(2024, 3, 31, 5), utc(2024, 4, 1, 5)]


def test_cron_in_a_fixed_offset_timezone() -> None:
    plus_0545 = FixedTimezone(5 * 3600 + 45 * 60)
    got = expand("0 0 * * *", utc(2024, 1, 1), utc(2024, 1, 2), plus_0545)
    assert logical_dates(got) == [utc(2024, 1, 1, 18, 15)]


# --- DST: one run per local calendar day, every real hour once ---------------------------------


@pytest.mark.parametrize("cron", ["@daily", "0 0 * * *", "30 2 * * *", "30 1 * * *"])
@pytest.mark.parametrize("year", [2023, 2024])
def test_daily_in_new_york_runs_once_per_local_day(cron: str, year: int) -> None:
    got = expand(cron, local(NY, year, 1, 1), local(NY, year, 12, 31, 23, 59), NY)
    assert_well_formed(got, utc(year - 1, 12, 31), utc(year + 1, 1, 2))
    days = [i.logical_date.in_timezone(NY).date() for i in got]
    assert len(days) == (366 if year == 2024 else 365)
    assert set(days) == days_of(year)


def test_daily_intervals_stretch_and_shrink_with_the_clock() -> None:
    got = expand("@daily", local(NY, 2024, 1, 1), local(NY, 2024, 12, 31), NY)
    lengths: dict[date, timedelta] = {i.logical_date.in_timezone(NY).date(): length(i) for i in got}
    assert lengths[date(2024, 3, 10)] == timedelta(hours=23)
    assert lengths[date(2024, 11, 3)] == timedelta(hours=25)
    assert {v for k, v in lengths.items() if k not in {date(2024, 3, 10), date(2024, 11, 3)}} == {
        timedelta(hours=24)
    }


def test_fixed_time_in_the_skipped_hour_runs_right_after_the_jump() -> None:
    # 02:30 does not exist in New York on 2024-03-10: cron (and cronsim) runs
    # the job at the first instant after the jump, 03:00 EDT.
    got = expand("30 2 * * *", local(NY, 2024, 3, 9), local(NY, 2024, 3, 11, 12), NY)
    assert [i.logical_date.in_timezone(NY).isoformat() for i in got] == [
        "2024-03-09T02:30:00-05:00",
        "2024-03-10T03:00:00-04:00",
        "2024-03-11T02:30:00-04:00",
    ]


def test_fixed_time_in_the_repeated_hour_runs_once_at_its_first_occurrence() -> None:
    got = expand("30 1 * * *", local(NY, 2024, 11, 2), local(NY, 2024, 11, 4, 12), NY)
    assert [i.logical_date.in_timezone(NY).isoformat() for i in got] == [
        "2024-11-02T01:30:00-04:00",
        "2024-11-03T01:30:00-04:00",
        "2024-11-04T01:30:00-05:00",
    ]


def test_hourly_across_fall_back_runs_every_real_hour_once() -> None:
    got = expand("@hourly", local(NY, 2024, 11, 3), local(NY, 2024, 11, 3, 23), NY)
    # The local day 2024-11-03 is 25 hours long: 04:00 UTC .. 04:00 UTC next day.
    assert logical_dates(got) == [utc(2024, 11, 3, 4).add(hours=n) for n in range(25)]
    assert [length(i) for i in got] == [timedelta(hours=1)] * 25
    walls = [i.logical_date.in_timezone(NY).strftime("%H:%M%z") for i in got]
    assert walls[1:3] == ["01:00-0400", "01:00-0500"]


def test_hourly_across_spring_forward_skips_the_missing_hour() -> None:
    got = expand("@hourly", local(NY, 2024, 3, 10), local(NY, 2024, 3, 10, 23), NY)
    assert logical_dates(got) == [utc(2024, 3, 10, 5).add(hours=n) for n in range(23)]
    assert 2 not in {i.logical_date.in_timezone(NY).hour for i in got}


def test_lord_howe_half_hour_shift() -> None:
    # Lord Howe Island moves its clocks by 30 minutes; a daily job stays at 00:00 local.
    lhi = pendulum.timezone("Australia/Lord_Howe")
    got = expand("@daily", local(lhi, 2024, 4, 6), local(lhi, 2024, 4, 8), lhi)
    hours = [length(i) / timedelta(hours=1) for i in got]
    assert hours == [24, 24.5, 24]
    assert [i.logical_date.in_timezone(lhi).time().isoformat() for i in got] == ["00:00:00"] * 3


@pytest.mark.parametrize(
    ("cron", "walls"),
    [
        # 01:30-01:59 happens twice on 2024-04-07; 02:00 only once, after the shift.
        ("0 */2 * * *", ["00:00+1100", "02:00+1030", "04:00+1030"]),
        ("30 * * * *", ["00:30+1100", "01:30+1100", "01:30+1030", "02:30+1030", "03:30+1030"]),
        ("30 1 * * *", ["01:30+1100"]),  # a fixed time runs at its first occurrence only
    ],
)
def test_lord_howe_fall_back_with_wildcard_and_fixed_times(cron: str, walls: list[str]) -> None:
    lhi = pendulum.timezone("Australia/Lord_Howe")
    got = expand(cron, local(lhi, 2024, 4, 7), local(lhi, 2024, 4, 7, 4), lhi)
    assert [i.logical_date.in_timezone(lhi).strftime("%H:%M%z") for i in got] == walls


# --- timedelta schedules -------------------------------------------------------------------------


def test_timedelta_starts_exactly_at_start_without_alignment() -> None:
    schedule = parse_schedule(timedelta(hours=7), pendulum.UTC, owner=OWNER)
    assert schedule == DeltaSchedule(timedelta(hours=7), pendulum.UTC)
    assert schedule.describe() == "every 7:00:00"
    got = schedule.intervals(utc(2024, 1, 1, 0, 13), utc(2024, 1, 2, 0, 13))
    assert logical_dates(got) == [utc(2024, 1, 1, 0, 13).add(hours=7 * n) for n in range(4)]
    assert got[-1].end == utc(2024, 1, 2, 4, 13)
    assert parse_schedule(timedelta(days=1), NY, owner=OWNER).describe() == "every 1 day, 0:00:00"


def test_timedelta_adds_absolute_time_across_dst() -> None:
    # As in Airflow, a timedelta is absolute time: a daily delta drifts on the local clock.
    got = expand(timedelta(days=1), local(NY, 2024, 3, 10), local(NY, 2024, 3, 11, 12), NY)
    assert [i.logical_date.in_timezone(NY).hour for i in got] == [0, 1]
    assert [length(i) for i in got] == [timedelta(days=1)] * 2


def test_pendulum_duration_in_days_is_a_timedelta_schedule() -> None:
    schedule = parse_schedule(pendulum.duration(days=2), pendulum.UTC, owner=OWNER)
    assert schedule == DeltaSchedule(timedelta(days=2), pendulum.UTC)


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "fragments"),
    [
        (
            "61 * * * *",
            ["'61 * * * *' is not a valid cron expression (bad minute)", "use 5 fields"],
        ),
        ("0 0 30 2 *", ["'0 0 30 2 *' is not a valid cron", "day-of-month"]),
        ("* * * *", ["'* * * *' is not a valid cron expression (it has 4 fields)", "@daily"]),
        ("0 0 0 * * *", ["(it has 6 fields)", "timedelta"]),
        ("", ["'' is not a valid cron expression (it has 0 fields)"]),
        ("@fortnightly", ["'@fortnightly' is not a known preset", "@hourly", "timedelta"]),
        ("@once", ["'@once' is not a known preset"]),
        (timedelta(0), ["timedelta must be positive", "timedelta(0)"]),
        (timedelta(minutes=-5), ["timedelta must be positive"]),
        (pendulum.duration(months=1), ["calendar months or years", "@monthly"]),
        (None, ["got None", "no dates to backfill"]),
        (86400, ["must be a cron expression, a preset like @daily or a timedelta, got 86400"]),
    ],
)
def test_bad_schedules_are_named_with_what_is_accepted(value: object, fragments: list[str]) -> None:
    with pytest.raises(ScheduleError) as info:
        parse_schedule(value, NY, owner=OWNER)  # type: ignore[arg-type]
    message = str(info.value)
    assert message.startswith(f"{OWNER}: ")
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message
    assert isinstance(info.value, UserError)


def test_unsupported_timezone_object_is_refused() -> None:
    with pytest.raises(ScheduleError, match=r"^DAG 'x': timezone .* is not supported"):
        parse_schedule("@daily", UTC, owner=OWNER)  # type: ignore[arg-type]


# --- command-line dates ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2016-01-01", utc(2016, 1, 1, 5)),  # midnight in New York
        ("2016-01-01T06:00", utc(2016, 1, 1, 11)),
        ("2016-01-01 06:00:00", utc(2016, 1, 1, 11)),
        ("2016-07-01T06:00:00", utc(2016, 7, 1, 10)),  # summer time
        ("2016-01-01T06:00:00+02:00", utc(2016, 1, 1, 4)),  # an offset is respected
        ("2016-01-01T06:00:00Z", utc(2016, 1, 1, 6)),
        ("  2016-01-01  ", utc(2016, 1, 1, 5)),
        ("2024-11-03T01:30", utc(2024, 11, 3, 5, 30)),  # repeated: first occurrence (EDT)
        ("2024-03-10T02:30", utc(2024, 3, 10, 7, 30)),  # skipped: moved forward to 03:30 EDT
    ],
)
def test_cli_dates_are_read_in_the_dag_timezone(text: str, expected: pendulum.DateTime) -> None:
    got = parse_cli_date(text, NY, option="-s/--start-date")
    assert got == expected
    assert got.tzinfo is pendulum.UTC


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("garbage", ""),
        ("2016-13-01", " (month must be in 1..12)"),
        ("2016-02-30", " (day is out of range for month)"),
        ("12:00", ""),  # a time alone would need today's date
        ("", ""),
        ("2016-01-01T25:00", " (hour must be in 0..23)"),
        ("0001-01-01T00:00+05:00", " (date value out of range)"),
    ],
)
def test_bad_cli_dates_get_one_line_naming_option_text_and_format(text: str, reason: str) -> None:
    with pytest.raises(BadRange) as info:
        parse_cli_date(text, NY, option="-e/--end-date")
    assert str(info.value) == (
        f"-e/--end-date: {text!r} is not a date{reason}; expected YYYY-MM-DD or an ISO 8601 "
        "date-time such as 2016-01-01T06:00:00 or 2016-01-01T06:00:00+02:00"
    )


# --- properties ------------------------------------------------------------------------------

ZONES = ["UTC", "America/New_York", "Europe/London", "Australia/Lord_Howe", "Asia/Kolkata"]
# 2024 transitions of the zones above, so that ranges often straddle one.
ANCHORS = [
    utc(2024, 3, 10, 7), utc(2024, 11, 3, 6), utc(2024, 3, 31, 1), utc(2024, 10, 27, 1),
    utc(2024, 4, 6, 15), utc(2024, 10, 5, 15), utc(2024, 6, 15),
]  # fmt: skip


def timezones() -> st.SearchStrategy[Timezone | FixedTimezone]:
    named = st.sampled_from(ZONES).map(pendulum.timezone)
    return st.one_of(named, st.just(FixedTimezone(-(9 * 3600 + 30 * 60))))


@st.composite
def ranges(draw: st.DrawFn, max_days: int) -> tuple[pendulum.DateTime, pendulum.DateTime]:
    """Bounds near a DST change, on whole minutes (often on ticks) or not, in any zone."""
    start = draw(st.sampled_from(ANCHORS)).add(minutes=draw(st.integers(-5 * 1440, 5 * 1440)))
    end = start.add(minutes=draw(st.integers(-60, max_days * 1440)))
    if draw(st.booleans()):
        start = start.add(microseconds=draw(st.integers(1, 59_999_999)))
    return start.in_timezone(draw(timezones())), end


def field(
    values: range, *, star_steps: Sequence[int], explicit: range | None = None
) -> st.SearchStrategy[tuple[str, set[int]]]:
    """A cron field as (text, the set of values it matches); numbers are drawn from `explicit`."""
    lo, hi = (explicit or values).start, (explicit or values).stop - 1
    single = st.integers(lo, hi).map(lambda v: (str(v), {v}))
    many = st.lists(st.integers(lo, hi), min_size=2, max_size=3, unique=True).map(
        lambda vs: (",".join(map(str, vs)), set(vs))
    )
    span = st.tuples(st.integers(lo, hi), st.integers(1, 9)).map(
        lambda p: (f"{p[0]}-{min(p[0] + p[1], hi)}", set(range(p[0], min(p[0] + p[1], hi) + 1)))
    )
    stars = st.sampled_from(star_steps).map(
        lambda n: ("*" if n == 1 else f"*/{n}", set(values[::n]))
    )
    return st.one_of(single, many, span, stars)


CRON_FIELDS = st.tuples(
    field(range(60), star_steps=[15, 20, 30]),
    field(range(24), star_steps=[1, 2, 5]),
    # Explicit days only up to 28: "0 0 31 2 *" would be refused as never firing.
    field(range(1, 32), star_steps=[1, 1, 3], explicit=range(1, 29)),
    field(range(1, 13), star_steps=[1, 1, 1, 2]),
    field(range(7), star_steps=[1, 1, 2]),
)


def oracle(
    fields: tuple[tuple[str, set[int]], ...],
    tz: Timezone | FixedTimezone,
    first: date,
    last: date,
) -> list[datetime]:
    """Cron ticks from `first` to `last` (local dates), enumerated day by day.

    Debian-cron semantics: with an explicit minute and hour a skipped wall time
    runs at the first real minute after it and a repeated one at its first
    occurrence; otherwise each real instant whose wall clock matches runs.
    """
    (m_text, minutes), (h_text, hours), (dom_text, doms), (_, months), (dow_text, dows) = fields
    fixed_time = not m_text.startswith("*") and not h_text.startswith("*")
    day_and = dom_text.startswith("*") or dow_text.startswith("*")
    out: set[datetime] = set()
    day = first
    while day <= last:
        dom_ok, dow_ok = day.day in doms, (day.weekday() + 1) % 7 in dows
        if day.month in months and ((dom_ok and dow_ok) if day_and else (dom_ok or dow_ok)):
            for hour, minute in itertools.product(hours, minutes):
                wall = datetime(day.year, day.month, day.day, hour, minute)
                out |= wall_to_utc(wall, tz, fixed_time=fixed_time)
        day += timedelta(days=1)
    return sorted(out)


def wall_to_utc(wall: datetime, tz: Timezone | FixedTimezone, *, fixed_time: bool) -> set[datetime]:
    def real(w: datetime) -> bool:
        return w.replace(tzinfo=tz).astimezone(UTC).astimezone(tz).replace(tzinfo=None) == w

    if fixed_time:
        while not real(wall):
            wall += timedelta(minutes=1)
        return {wall.replace(tzinfo=tz, fold=0).astimezone(UTC)}
    if not real(wall):
        return set()
    return {wall.replace(tzinfo=tz, fold=fold).astimezone(UTC) for fold in (0, 1)}


PROPERTY_SETTINGS = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@PROPERTY_SETTINGS
@given(fields=CRON_FIELDS, tz=timezones(), bounds=ranges(max_days=12))
def test_cron_property_matches_oracle(
    fields: tuple[tuple[str, set[int]], ...],
    tz: Timezone | FixedTimezone,
    bounds: tuple[pendulum.DateTime, pendulum.DateTime],
) -> None:
    start, end = bounds
    cron = " ".join(text for text, _ in fields)
    got = expand(cron, start, end, tz)
    assert_well_formed(got, start, end)
    local_first = start.in_timezone(tz).date() - timedelta(days=1)
    local_last = end.in_timezone(tz).date() + timedelta(days=40)
    expected = oracle(fields, tz, local_first, local_last)
    assert logical_dates(got) == [t for t in expected if start <= t <= end]
    following = [t for t in expected if t > end]
    if got and following:
        assert got[-1].end == following[0]


@PROPERTY_SETTINGS
@given(
    preset=st.sampled_from(["@hourly", "@daily", "@weekly", "@monthly", "@yearly"]),
    tz=timezones(),
    bounds=ranges(max_days=400),
)
def test_preset_property(
    preset: str, tz: Timezone | FixedTimezone, bounds: tuple[pendulum.DateTime, pendulum.DateTime]
) -> None:
    start, end = bounds
    if preset == "@hourly":
        end = min(end, start.add(days=20))
    got = expand(preset, start, end, tz)
    assert_well_formed(got, start, end)
    for i in got:
        wall = i.logical_date.in_timezone(tz)
        assert (wall.minute, wall.second) == (0, 0)
        if preset != "@hourly":  # midnight always exists in these zones
            assert wall.hour == 0


@PROPERTY_SETTINGS
@given(
    delta=st.integers(10 * 60, 3 * 86400).map(lambda s: timedelta(seconds=s)),
    tz=timezones(),
    bounds=ranges(max_days=12),
)
def test_timedelta_property(
    delta: timedelta,
    tz: Timezone | FixedTimezone,
    bounds: tuple[pendulum.DateTime, pendulum.DateTime],
) -> None:
    start, end = bounds
    got = expand(delta, start, end, tz)
    assert_well_formed(got, start, end)
    count = 0 if end < start else (plain(end) - plain(start)) // delta + 1
    assert logical_dates(got) == [plain(start) + n * delta for n in range(count)]
    assert all(length(i) == delta for i in got)


# --- the previous tick (depends_on_past) -----------------------------------------------------


def previous(
    schedule: str | timedelta,
    when: pendulum.DateTime,
    tz: Timezone | FixedTimezone = pendulum.UTC,
    not_before: pendulum.DateTime | None = None,
) -> DataInterval | None:
    return parse_schedule(schedule, tz, owner=OWNER).previous(when, not_before=not_before)


def test_previous_is_the_whole_interval_of_the_tick_before() -> None:
    got = previous("@daily", utc(2024, 1, 5))
    assert got == DataInterval(utc(2024, 1, 4), utc(2024, 1, 4), utc(2024, 1, 5))
    off_tick = previous("@daily", utc(2024, 1, 5, 13))
    assert off_tick is not None
    assert off_tick.logical_date == utc(2024, 1, 5)


def test_previous_is_none_before_not_before_and_allows_a_tick_on_it() -> None:
    assert previous("@daily", utc(2024, 1, 5), not_before=utc(2024, 1, 4, 1)) is None
    got = previous("@daily", utc(2024, 1, 5), not_before=utc(2024, 1, 4))
    assert got is not None
    assert got.logical_date == utc(2024, 1, 4)
    assert previous("@daily", utc(2024, 1, 5), not_before=utc(2024, 2, 1)) is None


def test_previous_of_a_sparse_schedule_far_from_its_start() -> None:
    # A yearly tick and a leap day: the lookback window grows to find it.
    got = previous("0 0 29 2 *", utc(2100, 6, 1), not_before=utc(1970, 1, 1))
    assert got is not None
    assert got.logical_date == utc(2096, 2, 29)
    assert got.end == utc(2104, 2, 29)  # 2100 is not a leap year
    assert previous("@yearly", utc(1, 6, 1)) is None  # nothing before the calendar's start


def test_previous_follows_the_dag_clock_across_dst() -> None:
    # Daily in New York: the day of the spring change lasts 23 hours.
    got = previous("@daily", local(NY, 2024, 3, 11), NY)
    assert got is not None
    assert (got.logical_date, got.end) == (local(NY, 2024, 3, 10), local(NY, 2024, 3, 11))
    assert length(got) == timedelta(hours=23)
    # A fixed time the clocks skip ran right after the jump (03:00 EDT).
    skipped = previous("30 2 * * *", local(NY, 2024, 3, 11, 2, 30), NY)
    assert skipped is not None
    assert skipped.logical_date == utc(2024, 3, 10, 7)


def test_previous_across_a_repeated_hour_sees_both_instants() -> None:
    first, second, after = utc(2024, 11, 3, 5), utc(2024, 11, 3, 6), utc(2024, 11, 3, 7)
    for when, expected in [(after, second), (second, first)]:
        got = previous("@hourly", when, NY)
        assert got is not None
        assert (got.logical_date, got.end) == (expected, when)


def test_previous_of_a_timedelta_schedule_is_one_delta_earlier() -> None:
    got = previous(timedelta(hours=7), utc(2024, 3, 10, 8), NY)
    assert got == DataInterval(utc(2024, 3, 10, 1), utc(2024, 3, 10, 1), utc(2024, 3, 10, 8))
    assert previous(timedelta(hours=7), utc(2024, 3, 10, 8), NY, utc(2024, 3, 10, 2)) is None


@PROPERTY_SETTINGS
@given(fields=CRON_FIELDS, tz=timezones(), bounds=ranges(max_days=12))
def test_previous_property_walks_the_expansion_backwards(
    fields: tuple[tuple[str, set[int]], ...],
    tz: Timezone | FixedTimezone,
    bounds: tuple[pendulum.DateTime, pendulum.DateTime],
) -> None:
    start, end = bounds
    cron = " ".join(text for text, _ in fields)
    got = expand(cron, start, end, tz)
    for before, after in itertools.pairwise(got):
        assert previous(cron, after.logical_date, tz) == before
        assert previous(cron, after.logical_date, tz, not_before=start) == before
    if got:
        assert previous(cron, got[0].logical_date, tz, not_before=start) is None


@PROPERTY_SETTINGS
@given(
    preset=st.sampled_from(["@hourly", "@daily", "@weekly", "@monthly"]),
    tz=timezones(),
    bounds=ranges(max_days=60),
)
def test_previous_property_for_presets_across_dst(
    preset: str, tz: Timezone | FixedTimezone, bounds: tuple[pendulum.DateTime, pendulum.DateTime]
) -> None:
    start, end = bounds
    got = expand(preset, start, min(end, start.add(days=3)) if preset == "@hourly" else end, tz)
    for before, after in itertools.pairwise(got):
        assert previous(preset, after.logical_date, tz) == before
