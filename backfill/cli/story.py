"""The story of `backfill status` in a terminal: its panel rows and what follows the panel.

What the story holds, and its JSON, is `backfill.client.story`'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Console

from backfill.cli.meter import format_duration
from backfill.cli.output import when
from backfill.cli.progress import group_failed, print_groups
from backfill.cli.report import print_log_commands
from backfill.client.story import NO_ERROR, StoryParts, hints


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
