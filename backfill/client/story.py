"""The story of a backfill: failures, deadlock, waiting, rate and ETA.

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

from sqlalchemy.engine import Connection

from backfill.client.shapes import iso, summary_json
from backfill.engine.coordinator import Outcome, Progress
from backfill.engine.telling import failed_key
from backfill.model.states import FINISHED, BackfillState, RunState, TIState
from backfill.planning.results import TIKey
from backfill.planning.run_options import RunOptions
from backfill.planning.story import key_json, pace
from backfill.store import adopt, reports
from backfill.store.adopt import FailedTI
from backfill.store.status import Summary

FAILED_SHOWN = 100  # failed TIs the JSON lists (the table groups them all)
NO_ERROR = "an upstream task failed (no error of its own)"
DEPENDS_ON_PAST_HINT = (
    "some task instances wait for their depends_on_past: when the first date's past is "
    "outside the range or never ran, run these dates again with --reprocess failed "
    "--ignore-first-depends-on-past, which lets the first date run without it"
)


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


def read_story(conn: Connection, found: Summary, *, now: datetime) -> StoryParts:
    """The failures (of the tasks the backfill selects) and the driver's last report,
    read in the caller's snapshot."""
    selects = RunOptions.from_json(found.options).selects  # --task-regex
    failed = [f for f in adopt.failed_tis(conn, found.id) if selects(f.task_id)]
    return story_of(found, failed, reports.read(conn, found.id), now=now)


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


def status_json(found: Summary, parts: StoryParts) -> dict[str, Any]:
    """`backfill status ID -o json` and `GET /api/v1/backfills/{id}`."""
    return {**summary_json(found), **story_json(found.id, parts)}


def log_command(backfill_id: int, key: TIKey) -> str | None:
    """The command printing the log of the failed try `key`; None if it never ran."""
    if key.try_number < 1:
        return None
    date = key.logical_date.isoformat()
    mapped = "" if key.map_index < 0 else f" -m {key.map_index}"
    return f"backfill logs {backfill_id} {key.task_id} -d {date}{mapped} --try {key.try_number}"


def hints(deadlock: Mapping[str, object] | None) -> list[str]:
    """What to do about a deadlock beyond its reasons: each piece of advice once."""
    reasons = deadlock or {}
    return [DEPENDS_ON_PAST_HINT] if any("depends_on_past" in r for r in reasons) else []


def outcome_json(
    backfill_id: int, dag_id: str, outcome: Outcome, final: Progress
) -> dict[str, Any]:
    """`backfill run -o json`: how a backfill driven in the foreground ended."""
    return {
        "id": backfill_id,
        "dag_id": dag_id,
        "state": outcome.state.value,
        # Every state, zeros included (as `backfill status`): keys never depend on progress.
        "runs": {s.value: final.runs.get(s.value, 0) for s in RunState},
        "task_instances": {s.value: final.task_instances.get(s.value, 0) for s in TIState},
        "failed": [
            {**key_json(key), "last_error": error, "log_command": log_command(backfill_id, key)}
            for key, error in outcome.failed
        ],
        "deadlock": {
            reason: [key_json(key) for key in keys]
            for reason, keys in (outcome.deadlock or {}).items()
        },
        "hints": hints(outcome.deadlock),
    }
