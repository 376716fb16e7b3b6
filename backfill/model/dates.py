"""Dates on the wall clock: reading them from the command line, and turning a
DAG timezone's wall time into UTC. Pure: no I/O, never now().
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone, tzinfo

import pendulum
from pendulum.tz.timezone import FixedTimezone, Timezone

from backfill.model.errors import BadRange

_CLI_FORMAT = (
    "YYYY-MM-DD or an ISO 8601 date-time such as 2016-01-01T06:00:00 or 2016-01-01T06:00:00+02:00"
)


def parse_cli_date(text: str, tz: Timezone | FixedTimezone, *, option: str) -> pendulum.DateTime:
    """`YYYY-MM-DD` or an ISO 8601 date-time; without an offset it is read in `tz`. Returns UTC."""
    try:
        parsed = datetime.fromisoformat(text.strip())
        return to_pendulum(as_utc(parsed, tz))
    except (ValueError, OverflowError, TypeError, AttributeError) as exc:
        raise BadRange(
            f"{option}: {text!r} is not a date{_short_reason(exc, text)}; expected {_CLI_FORMAT}"
        ) from None


def _short_reason(exc: Exception, text: object) -> str:
    """A library's reason, only when it adds something on one short line."""
    reason = str(exc)
    if "\n" in reason or len(reason) > 60 or "isoformat" in reason or str(text) in reason:
        return ""
    return f" ({reason})"


def as_utc(value: datetime, tz: Timezone | FixedTimezone) -> datetime:
    """An aware stdlib datetime in UTC; a naive `value` is wall time in `tz` (fold as given)."""
    # Rebuilt field by field so that pendulum subclasses become plain stdlib datetimes.
    wall = (value.year, value.month, value.day, value.hour, value.minute, value.second)
    zone = value.tzinfo or stdlib_tz(tz)
    plain = datetime(*wall, value.microsecond, tzinfo=zone, fold=value.fold)
    return plain.astimezone(UTC)


def stdlib_tz(tz: Timezone | FixedTimezone) -> tzinfo:
    """The stdlib tzinfo for wall-clock arithmetic (stdlib UTC is the fastest)."""
    offset = tz.utcoffset(None) if isinstance(tz, FixedTimezone) else None
    if tz.name == "UTC" or offset == timedelta(0):
        return UTC
    return timezone(offset) if offset is not None else tz


def to_pendulum(value: datetime) -> pendulum.DateTime:
    return pendulum.instance(value.astimezone(UTC), tz=pendulum.UTC)
