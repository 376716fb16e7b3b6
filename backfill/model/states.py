"""The closed sets of states and the only transitions allowed between them.

This module is the single source of truth: the store only issues transitions
listed in `TRANSITIONS`, and the schema derives its CHECK constraints from the
enums below (a test proves the three agree).

Task-instance lifecycle (DESIGN section 3)::

    none -> scheduled -> queued -> running -> success | failed | skipped
                                           -> up_for_retry | up_for_reschedule
    up_for_retry / up_for_reschedule -> queued (when due; a retry is a new try)
    none / scheduled -> upstream_failed | skipped | removed (decided upstream)
    any finished state -> none (cleared for a rerun)
"""

from __future__ import annotations

import enum


class TIState(enum.StrEnum):
    NONE = "none"
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    SKIPPED = "skipped"
    UP_FOR_RETRY = "up_for_retry"
    UP_FOR_RESCHEDULE = "up_for_reschedule"
    UPSTREAM_FAILED = "upstream_failed"
    REMOVED = "removed"


_S = TIState

TRANSITIONS: dict[TIState, frozenset[TIState]] = {
    _S.NONE: frozenset({_S.SCHEDULED, _S.QUEUED, _S.UPSTREAM_FAILED, _S.SKIPPED, _S.REMOVED}),
    _S.SCHEDULED: frozenset({_S.NONE, _S.QUEUED, _S.UPSTREAM_FAILED, _S.SKIPPED, _S.REMOVED}),
    # queued -> scheduled: a cleared or cancelled dispatch; queued -> failed: a
    # worker refused the try (e.g. DAG version skew) before running it.
    _S.QUEUED: frozenset({_S.RUNNING, _S.SCHEDULED, _S.FAILED}),
    _S.RUNNING: frozenset(
        {_S.SUCCESS, _S.FAILED, _S.SKIPPED, _S.UP_FOR_RETRY, _S.UP_FOR_RESCHEDULE}
    ),
    _S.UP_FOR_RETRY: frozenset({_S.QUEUED, _S.FAILED}),
    _S.UP_FOR_RESCHEDULE: frozenset({_S.QUEUED, _S.FAILED}),
    _S.SUCCESS: frozenset({_S.NONE}),
    _S.FAILED: frozenset({_S.NONE}),
    _S.SKIPPED: frozenset({_S.NONE}),
    _S.UPSTREAM_FAILED: frozenset({_S.NONE}),
    _S.REMOVED: frozenset({_S.NONE}),
}

FINISHED: frozenset[TIState] = frozenset(
    {_S.SUCCESS, _S.FAILED, _S.SKIPPED, _S.UPSTREAM_FAILED, _S.REMOVED}
)
SUCCEEDED: frozenset[TIState] = frozenset({_S.SUCCESS, _S.SKIPPED})
FAILED_STATES: frozenset[TIState] = frozenset({_S.FAILED, _S.UPSTREAM_FAILED})
# Holding pool slots and counting toward concurrency limits.
ACTIVE: frozenset[TIState] = frozenset({_S.QUEUED, _S.RUNNING})
# Waiting for a due time, not blocked: never evidence of a deadlock.
WAITING: frozenset[TIState] = frozenset({_S.UP_FOR_RETRY, _S.UP_FOR_RESCHEDULE})


def sources_of(target: TIState) -> frozenset[TIState]:
    """The states from which `target` may be reached."""
    return frozenset(src for src, dsts in TRANSITIONS.items() if target in dsts)


def source(src: TIState, *targets: TIState) -> TIState:
    """`src`, checked against `TRANSITIONS` to lead to each of `targets`: a statement that
    moves TIs out of one named state names it through this, so the table is checked when
    the statement is built (at import), not trusted."""
    illegal = [t.value for t in targets if t not in TRANSITIONS[src]]
    if illegal:
        raise ValueError(f"{src.value} -> {', '.join(illegal)} is not in TRANSITIONS")
    return src


class RunState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"


RUN_FINISHED: frozenset[RunState] = frozenset({RunState.SUCCESS, RunState.FAILED})


class BackfillState(enum.StrEnum):
    QUEUED = "queued"  # created; no coordinator has picked it up yet
    RUNNING = "running"
    PAUSED = "paused"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"


BACKFILL_FINISHED: frozenset[BackfillState] = frozenset(
    {BackfillState.SUCCESS, BackfillState.FAILED, BackfillState.CANCELLED}
)
