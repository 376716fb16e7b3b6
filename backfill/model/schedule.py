"""Schedules -> logical dates and data intervals. Pure: no I/O, never now().

A schedule is a cron expression (or preset) or a fixed timedelta, bound to the
DAG's timezone. `Schedule.intervals(start, end)` expands the backfill range
the way `airflow dags backfill` does (Airflow 2 data-interval timetables):

- the range is inclusive by logical date: the first logical date is `start`
  if it is a tick, else the next tick; expansion continues while the logical
  date is <= `end`; the last data interval may end after `end`;
- cron: logical date = data interval start = a tick, end = the next tick;
- timedelta: the first logical date is exactly `start` (no alignment) and
  each interval is [L, L + delta), added in absolute time.

`Schedule.previous(dt)` is the interval of the tick before `dt` (what
depends_on_past looks at), found without expanding from the DAG's start.

Invariants of the result: every DateTime is in UTC; logical dates are
strictly increasing and inside [start, end]; each interval's start is before
its end, and its end is the next interval's start.

Cron fields are matched on the naive wall clock of the DAG's timezone by
`cronsim` (pure calendar arithmetic); wall times become instants here, the way
Debian cron (and cronsim's own fixed-time rule) treat DST changes:
- a job at a fixed time (explicit minute and hour, e.g. "30 2 * * *") runs once
  per matching local day: a wall time the clocks skip runs at the first instant
  after the jump (02:30 on 2024-03-10 in New York runs at 03:00 EDT), a wall
  time that occurs twice runs at its first occurrence only;
- a job with a wildcard minute or hour (e.g. "@hourly") runs at every real
  instant whose wall clock matches: skipped wall times do not run, repeated
  ones run twice (once per UTC instant). cronsim's own stepping for these
  misses ticks around Lord Howe Island's 30-minute shift, hence the mapping here.

Dates typed on the command line without an offset are read in the DAG's
timezone; a wall time that occurs twice is read as its first occurrence, one
that the clocks skip is moved forward by the length of the gap.
"""

from __future__ import annotations

import abc
import heapq
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo

import pendulum
from cronsim import CronSim, CronSimError
from pendulum.tz.timezone import FixedTimezone, Timezone

from backfill.model.dates import as_utc, stdlib_tz, to_pendulum
from backfill.model.errors import BadRange, ScheduleError

PRESETS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@quarterly": "0 0 1 */3 *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
_ACCEPTED = (
    "use 5 fields (minute hour day-of-month month day-of-week), a preset like @daily, "
    "or a timedelta"
)
_ONE_SECOND = timedelta(seconds=1)
# No clock in the tz database ever went back by more than a day (Alaska, 1867).
_WIDEST_FOLD = timedelta(days=1)
# A fixed, arbitrary wall time: parsing probes one tick from it (never from now()).
_PROBE_FROM = datetime(2000, 1, 1)


@dataclass(frozen=True)
class DataInterval:
    """One run of a schedule: all three are UTC pendulum DateTimes."""

    logical_date: pendulum.DateTime
    start: pendulum.DateTime
    end: pendulum.DateTime


class Schedule(abc.ABC):
    """A series of ticks on the DAG's timezone; subclasses say where ticks fall."""

    timezone: Timezone | FixedTimezone

    @abc.abstractmethod
    def describe(self) -> str:
        """The schedule as the DAG's author wrote it, readable."""

    @abc.abstractmethod
    def _ticks_from(self, start: datetime) -> Iterator[datetime]:
        """Ticks >= `start` (aware, UTC), strictly increasing, as aware UTC datetimes."""

    def intervals(self, start: pendulum.DateTime, end: pendulum.DateTime) -> list[DataInterval]:
        """Data intervals whose logical date lies in [start, end] (naive = DAG timezone)."""
        first, last = as_utc(start, self.timezone), as_utc(end, self.timezone)
        out: list[DataInterval] = []
        if first > last:
            return out
        ticks = self._ticks_from(first)
        try:
            current = self._next_tick(ticks, after=first)
            while current <= last:
                following = self._next_tick(ticks, after=current)
                logical_date = to_pendulum(current)
                out.append(DataInterval(logical_date, logical_date, to_pendulum(following)))
                current = following
        except OverflowError:
            raise BadRange(
                f"the range {first.isoformat()} .. {last.isoformat()} runs past the calendar's "
                "limits (years 1 to 9999); choose nearer dates"
            ) from None
        return out

    def count(self, start: pendulum.DateTime, end: pendulum.DateTime, *, limit: int) -> int:
        """How many logical dates lie in [start, end], counting no further than `limit` + 1:
        the ticks alone, in constant memory, so an absurd range is refused without
        being expanded."""
        first, last = as_utc(start, self.timezone), as_utc(end, self.timezone)
        if first > last:
            return 0
        try:
            ticks = itertools.takewhile(lambda tick: tick <= last, self._ticks_from(first))
            return sum(1 for _ in itertools.islice(ticks, limit + 1))
        except OverflowError:
            return limit + 1  # past year 9999: more than any cap

    def previous(self, dt: datetime, *, not_before: datetime | None = None) -> DataInterval | None:
        """The interval of the last tick before `dt`; None if none is at or after `not_before`
        (the DAG's start_date: its first logical date has no previous one)."""
        target = as_utc(dt, self.timezone)
        floor = None if not_before is None else as_utc(not_before, self.timezone)
        try:
            tick = self._tick_before(target, floor)
            return None if tick is None else self.intervals(to_pendulum(tick), to_pendulum(tick))[0]
        except OverflowError:  # no tick since year 1
            return None

    def _tick_before(self, target: datetime, floor: datetime | None) -> datetime | None:
        """The last tick in [floor, target). It looks back in a window that doubles until it
        holds a tick, so a date far from the DAG's start never expands all between them."""
        window = timedelta(hours=1)
        while True:
            low = target - window if floor is None else max(floor, target - window)
            last = None
            for tick in self._ticks_from(low):
                if tick >= target:
                    break
                last = tick
            if last is not None or low == floor:
                return last
            window *= 2

    def _next_tick(self, ticks: Iterator[datetime], *, after: datetime) -> datetime:
        tick = next(ticks, None)
        if tick is None:  # cronsim gives up after 50 years without a match
            raise ScheduleError(
                f"schedule {self.describe()!r} has no tick in the 50 years after "
                f"{after.isoformat()}; choose a schedule that fires"
            )
        return tick


@dataclass(frozen=True)
class CronSchedule(Schedule):
    """A 5-field cron expression evaluated on the wall clock of `timezone`."""

    cron: str
    timezone: Timezone | FixedTimezone
    label: str = ""

    def describe(self) -> str:
        return self.label or self.cron

    @property
    def fixed_time(self) -> bool:
        """Explicit minute and hour: the Debian cron rule for DST applies (module docstring)."""
        minute, hour = self.cron.split(" ")[:2]
        return not minute.startswith("*") and not hour.startswith("*")

    def _ticks_from(self, start: datetime) -> Iterator[datetime]:
        zone, fixed_time = stdlib_tz(self.timezone), self.fixed_time
        if isinstance(zone, timezone):  # a fixed offset (UTC): no DST, wall = instant + offset
            offset = zone.utcoffset(None)
            walls = CronSim(self.cron, (start - _ONE_SECOND).astimezone(zone).replace(tzinfo=None))
            utc = ((wall - offset).replace(tzinfo=UTC) for wall in walls)
            yield from itertools.dropwhile(lambda instant: instant < start, utc)
            return
        # cronsim yields ticks strictly after its seed; a wall time before
        # `start`'s can still be a later instant after a clock goes back.
        seed = (start - _ONE_SECOND).astimezone(zone).replace(tzinfo=None) - _WIDEST_FOLD
        # The second instant of a repeated wall time comes after the first
        # instants of later wall times: hold instants in a heap until no
        # later wall time can map before them (the fold=0 mapping is monotonic).
        pending: list[datetime] = []
        previous = start - _ONE_SECOND
        for wall in CronSim(self.cron, seed):
            instants = _instants(wall, zone, fixed_time=fixed_time)
            if not instants:
                continue
            for instant in instants:
                heapq.heappush(pending, instant)
            while pending and pending[0] <= instants[0]:
                instant = heapq.heappop(pending)
                if instant >= start and instant > previous:  # collapsed DST gaps repeat
                    previous = instant
                    yield instant
        yield from (t for t in sorted(pending) if t >= start and t > previous)


def _instants(wall: datetime, zone: tzinfo, *, fixed_time: bool) -> list[datetime]:
    """The UTC instants at which the naive `wall` time is a tick in `zone`, in order."""
    if not _is_real(wall, zone):  # the clocks skip `wall`
        if not fixed_time:
            return []
        while not _is_real(wall, zone):  # run at the first real minute after the jump
            wall += timedelta(minutes=1)
        return [wall.replace(tzinfo=zone, fold=0).astimezone(UTC)]
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    return [first] if fixed_time or second == first else [first, second]


def _is_real(wall: datetime, zone: tzinfo) -> bool:
    """False for a wall time inside a DST gap (zoneinfo maps it to another wall time)."""
    return wall.replace(tzinfo=zone).astimezone(UTC).astimezone(zone).replace(tzinfo=None) == wall


@dataclass(frozen=True)
class DeltaSchedule(Schedule):
    """Every `delta` of absolute time from the start of the range, unaligned."""

    delta: timedelta
    timezone: Timezone | FixedTimezone

    def describe(self) -> str:
        return f"every {self.delta}"

    def _tick_before(self, target: datetime, floor: datetime | None) -> datetime | None:
        # Ticks fall every `delta` from the start of the range, whatever it was: the one
        # before a logical date is always `delta` earlier.
        tick = target - self.delta
        return None if floor is not None and tick < floor else tick

    def count(self, start: pendulum.DateTime, end: pendulum.DateTime, *, limit: int) -> int:
        first, last = as_utc(start, self.timezone), as_utc(end, self.timezone)
        return 0 if first > last else min(limit + 1, (last - first) // self.delta + 1)

    def _ticks_from(self, start: datetime) -> Iterator[datetime]:
        tick = start
        while True:
            yield tick
            tick = tick + self.delta


def parse_schedule(value: str | timedelta, tz: Timezone | FixedTimezone, *, owner: str) -> Schedule:
    """Validate a DAG's `schedule`; `owner` (e.g. "DAG 'x'") starts every error message."""
    if not isinstance(tz, Timezone | FixedTimezone):
        raise ScheduleError(
            f"{owner}: timezone {tz!r} is not supported; give start_date a zone from "
            "pendulum or zoneinfo, e.g. pendulum.datetime(2016, 1, 1, tz='Europe/London')"
        )
    if isinstance(value, timedelta):
        return DeltaSchedule(_check_delta(value, owner), tz)
    if isinstance(value, str):
        return _parse_cron(value, tz, owner)
    hint = " (a DAG without a schedule has no dates to backfill)" if value is None else ""
    raise ScheduleError(
        f"{owner}: schedule must be a cron expression, a preset like @daily or a timedelta, "
        f"got {value!r}{hint}"
    )


def _check_delta(value: timedelta, owner: str) -> timedelta:
    # pendulum.Duration is a timedelta whose months/years are not a fixed length.
    if isinstance(value, pendulum.Duration) and (value.years or value.months):
        raise ScheduleError(
            f"{owner}: schedule {value!r} counts calendar months or years, which have no fixed "
            "length; use a cron preset like @monthly or @yearly"
        )
    if value <= timedelta(0):
        raise ScheduleError(f"{owner}: schedule timedelta must be positive, got {value!r}")
    return timedelta(days=value.days, seconds=value.seconds, microseconds=value.microseconds)


def _parse_cron(value: str, tz: Timezone | FixedTimezone, owner: str) -> CronSchedule:
    written = " ".join(value.split())
    if written.startswith("@"):
        cron = PRESETS.get(written.lower())
        if cron is None:
            raise ScheduleError(
                f"{owner}: schedule {value!r} is not a known preset; "
                f"use one of {', '.join(PRESETS)}, a 5-field cron expression or a timedelta"
            )
        return CronSchedule(cron, tz, label=written)
    fields = written.split(" ") if written else []
    reason = f"it has {len(fields)} fields" if len(fields) != 5 else _cron_problem(written)
    if reason:
        raise ScheduleError(
            f"{owner}: schedule {value!r} is not a valid cron expression ({reason}); {_ACCEPTED}"
        )
    return CronSchedule(written, tz, label=written)


def _cron_problem(cron: str) -> str | None:
    """Why cronsim refuses `cron`, or None; probing one tick also catches never-firing ones."""
    try:
        next(CronSim(cron, _PROBE_FROM))
    except CronSimError as exc:
        return str(exc).lower() or "cronsim refused it"
    except StopIteration:
        return "it never fires"
    return None
