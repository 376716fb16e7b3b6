"""A backfill's story as its driver last told it: why TIs wait or deadlock, and its pace.

The driving coordinator keeps it with the backfill (`backfills.report`, as
JSON) so `backfill status` tells a daemon-driven backfill's story as `run`
does in the foreground. Pure: time is passed in.

Invariants:
- `Story.update` says whether the report is worth writing: when what it says
  changed (the waiting or deadlock reasons and their counts), and at most
  every `SAMPLE_EVERY` seconds otherwise, for a progress sample; so a busy
  backfill costs one small UPDATE every few seconds, not one per pass;
- the last `SAMPLES` samples (finished TIs, when) are kept: the rate is over
  about the last minute; TI keys are capped at `KEYS_PER_REASON` per reason,
  counts are exact;
- `pace` reads the rate and ETA back from a stored report.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from backfill.planning.results import PassResult, TIKey

SAMPLE_EVERY = 5.0  # seconds between two progress samples
SAMPLES = 13  # about a minute of samples
KEYS_PER_REASON = 50


def key_json(key: TIKey) -> dict[str, Any]:
    return {
        "dag_id": key.dag_id,
        "task_id": key.task_id,
        "run_id": key.run_id,
        "logical_date": key.logical_date.isoformat(),
        "try_number": key.try_number,
        "map_index": key.map_index,
    }


def _groups(groups: Mapping[str, tuple[TIKey, ...]]) -> dict[str, Any]:
    return {
        reason: {"count": len(keys), "tis": [key_json(k) for k in keys[:KEYS_PER_REASON]]}
        for reason, keys in groups.items()
    }


class Story:
    """The report of one driver, sample after sample."""

    def __init__(self) -> None:
        self._said: object = None
        self._sampled_at: datetime | None = None
        self._samples: deque[tuple[str, int]] = deque(maxlen=SAMPLES)

    def due(
        self, result: PassResult, now: datetime, broker_down_since: datetime | None = None
    ) -> bool:
        """Whether a report after `result` would say something new."""
        last = self._sampled_at
        return (
            self._said != _gist(result, broker_down_since)
            or last is None
            or (now - last).total_seconds() >= SAMPLE_EVERY
        )

    def report(
        self,
        result: PassResult,
        *,
        finished: int,
        now: datetime,
        broker_down_since: datetime | None = None,
    ) -> dict[str, Any]:
        """The report after `result`, with `finished` TIs at `now` as its newest sample;
        `broker_down_since`: the driver cannot publish, and retries, since then."""
        self._said = _gist(result, broker_down_since)
        self._sampled_at = now
        self._samples.append((now.isoformat(), finished))
        return {
            "at": now.isoformat(),
            "waiting": _groups(result.waiting),
            "deadlock": None if result.deadlock is None else _groups(result.deadlock),
            "samples": [list(s) for s in self._samples],
            "broker_down_since": None
            if broker_down_since is None
            else broker_down_since.isoformat(),
        }


def _gist(result: PassResult, broker_down_since: datetime | None) -> object:
    """What a report says besides its samples: reasons and their counts, an outage."""
    deadlock = (
        None if result.deadlock is None else sorted((r, len(k)) for r, k in result.deadlock.items())
    )
    waiting = sorted((r, len(k)) for r, k in result.waiting.items())
    return (waiting, deadlock, broker_down_since)


def pace(report: Mapping[str, Any] | None, *, left: int) -> tuple[float | None, float | None]:
    """(TIs finished per minute, seconds to go for `left` TIs) from a report's samples;
    None where the samples cannot tell (fewer than two, or no progress)."""
    samples = (report or {}).get("samples") or []
    if len(samples) < 2:
        return None, None
    (first_at, first), (last_at, last) = samples[0], samples[-1]
    span = (datetime.fromisoformat(last_at) - datetime.fromisoformat(first_at)).total_seconds()
    if span <= 0:
        return None, None
    per_second = (last - first) / span
    eta = left / per_second if per_second > 0 else None
    return per_second * 60, (0.0 if left == 0 else eta)
