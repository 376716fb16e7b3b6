"""The story part of `backfill status`: failures, deadlock, waiting, rate and ETA.

Invariants:
- failed TIs are read from the database (every one, grouped by error; the
  JSON lists the first `FAILED_SHOWN` with the command for each one's log);
  the deadlock and waiting reasons are what the driver's last pass decided
  (`planning.story`, kept with the backfill), so a backfill driven by a
  `backfill coordinator` tells as much as `backfill run` does;
- waiting reasons are shown only while the backfill runs, a deadlock only
  once it has failed: a stale report never contradicts the state;
- rate and ETA come from the report's samples (about the last minute), and
  are null when they cannot be told.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rich.console import Console

from backfill.cli.meter import format_duration
from backfill.cli.output import iso, when
from backfill.cli.progress import group_failed, print_groups
from backfill.cli.report import NO_ERROR, hints, log_command, print_log_commands
from backfill.engine.telling import failed_key
from backfill.model.states import FINISHED, BackfillState
from backfill.planning.results import TIKey
from backfill.planning.story import key_json, pace
from backfill.store.adopt import FailedTI
from backfill.store.status import Summary

FAILED_SHOWN = 100  # failed TIs the JSON lists (the table groups them all)


@dataclass(frozen=True, kw_only=True)
class StoryParts:
    failed: list[tuple[TIKey, str | None]]
    deadlock: dict[str, Any]  # reason -> {"count", "tis"}; {} when none
    waiting: dict[str, Any]  # reason -> {"count", "tis"}; {} unless running
    rate: float | None  # TIs finished per minute
    eta: float | None  # seconds
    report_at: str | None
    driver: str | None  # the coordinator holding the lease, if any holds it now
    lease_expires_at: datetime | None
    broker_down_since: str | None  # the driver cannot publish since then, and retries


def story_of(
    found: Summary,
    failed: Sequence[FailedTI],
    report: Mapping[str, Any] | None,
    *,
    now: datetime,
) -> StoryParts:
    """The parts of the story, each shown only when the state makes it true."""
    report = report or {}
    left = unfinished(found)
    rate, eta = pace(report, left=left)
    running = found.state is BackfillState.RUNNING
    held = found.lease_expires_at is not None and found.lease_expires_at > now
    return StoryParts(
        failed=[(failed_key(f), f.last_error) for f in failed],
        deadlock=(report.get("deadlock") or {}) if found.state is BackfillState.FAILED else {},
        waiting=(report.get("waiting") or {}) if running else {},
        rate=rate if running else None,
        eta=eta if running else None,
        report_at=report.get("at"),
        driver=found.lease_owner if held else None,
        lease_expires_at=found.lease_expires_at if held else None,
        broker_down_since=report.get("broker_down_since") if running else None,
    )


_FINISHED = {s.value for s in FINISHED}


def unfinished(found: Summary) -> int:
    """How many of the backfill's TIs are not finished yet."""
    return sum(n for state, n in found.task_instances.items() if state not in _FINISHED)


def story_json(backfill_id: int, parts: StoryParts) -> dict[str, Any]:
    return {
        "failed": [
            {**key_json(key), "last_error": error, "log_command": log_command(backfill_id, key)}
            for key, error in parts.failed[:FAILED_SHOWN]
        ],
        "failed_total": len(parts.failed),
        "deadlock": parts.deadlock,
        "hints": hints(parts.deadlock),
        "waiting": {reason: group["count"] for reason, group in parts.waiting.items()},
        "rate_per_minute": parts.rate,
        "eta_seconds": parts.eta,
        "report_at": parts.report_at,
        "driver": None
        if parts.driver is None
        else {"owner": parts.driver, "lease_expires_at": iso(parts.lease_expires_at)},
        "broker_down_since": parts.broker_down_since,
    }


def panel_rows(parts: StoryParts) -> list[tuple[str, str]]:
    """The story's rows in the status panel: pace, driver, a broker outage."""
    rows = []
    if parts.rate is not None:
        eta = "-" if parts.eta is None else format_duration(parts.eta)
        rows.append(("pace", f"{parts.rate:.1f} TIs/min over the last minute, ETA {eta}"))
    if parts.driver is not None:
        rows.append(("driver", f"{parts.driver} (lease until {when(parts.lease_expires_at)})"))
    if parts.broker_down_since is not None:
        since = parts.broker_down_since
        rows.append(("broker", f"unreachable since {since}; the driver retries with backoff"))
    return rows


def print_story(out: Console, backfill_id: int, parts: StoryParts) -> None:
    if parts.failed:
        print_groups(
            out, "failed task instances, by error:", group_failed(parts.failed, no_error=NO_ERROR)
        )
        print_log_commands(out, backfill_id, parts.failed)
    if parts.deadlock:
        _print_reported(
            out, "deadlocked: these task instances can never run, by reason:", parts.deadlock
        )
        for hint in hints(parts.deadlock):
            out.print(f"hint: {hint}", soft_wrap=True)
    if parts.waiting:
        _print_reported(out, "held back at the driver's last pass, by reason:", parts.waiting)


def _print_reported(out: Console, heading: str, groups: Mapping[str, Any]) -> None:
    """Groups as a report keeps them: an exact count and the first TIs of each."""
    out.print(heading)
    for reason, group in groups.items():
        out.print(f"  {reason} ({group['count']}):", soft_wrap=True)
        for ti in group["tis"]:
            what = f"{ti['dag_id']}/{ti['task_id']}/{ti['logical_date']}"
            tried = f"try {ti['try_number']}" if ti["try_number"] else "(never ran)"
            out.print(f"    {what} {tried}", soft_wrap=True)
        hidden = group["count"] - len(group["tis"])
        if hidden > 0:
            out.print(f"    ... and {hidden} more (see `backfill tasks`)")
