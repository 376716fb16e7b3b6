"""The closed sets of states and the only transitions allowed between them.

This module is the single source of truth: the store only issues transitions
listed in `TRANSITIONS` (TIs), `RUN_TRANSITIONS` (DAG runs) and
`BACKFILL_TRANSITIONS` (backfills), naming its source states through
`source` / `sources_of`; the schema derives its CHECK constraints from the
enums below (a test proves they agree), and every change of state is
journaled, so the test suite checks each journaled pair against its table.

Task-instance lifecycle (DESIGN section 3)::

    none -> scheduled -> queued -> running -> success | failed | skipped
                                           -> up_for_retry | up_for_reschedule
    up_for_retry / up_for_reschedule -> queued (when due; a retry is a new try)
    none / scheduled -> upstream_failed | skipped | removed (decided upstream)
    any finished state -> none (cleared for a rerun)
    running / up_for_retry / up_for_reschedule -> none (`backfill clear`: a running
                                                try is fenced, its claim taken away)
    running -> failed (also `cancel --abort`: fenced and failed)

DAG-run lifecycle (created `queued` with its backfill)::

    queued -> running -> success | failed   (started in a rolling window; ended
                                             when all its TIs have)
    queued -> failed                        (its backfill ended without starting it)
    running -> failed                       (its backfill ended, cancelled or deadlocked)
    success / failed -> queued              (adopted by a new backfill: --reprocess)

Backfill lifecycle (created `queued`)::

    queued -> running              (creation, or the first coordinator pass)
    queued -> success              (creation: every date already done, nothing to run)
    running -> success | failed    (the pass that sees its last run end, or a deadlock)
    running -> paused -> running   (`backfill pause` / `backfill resume`)
    queued / running / paused -> cancelled   (`backfill cancel`)
    success / failed -> running    (`backfill clear` reopens it)
    cancelled: final
"""

from __future__ import annotations

import enum
from typing import Any, TypeVar


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
        {_S.SUCCESS, _S.FAILED, _S.SKIPPED, _S.UP_FOR_RETRY, _S.UP_FOR_RESCHEDULE, _S.NONE}
    ),
    _S.UP_FOR_RETRY: frozenset({_S.QUEUED, _S.FAILED, _S.NONE}),
    _S.UP_FOR_RESCHEDULE: frozenset({_S.QUEUED, _S.FAILED, _S.NONE}),
    _S.SUCCESS: frozenset({_S.NONE}),
    _S.FAILED: frozenset({_S.NONE}),
    _S.SKIPPED: frozenset({_S.NONE}),
    _S.UPSTREAM_FAILED: frozenset({_S.NONE}),
    _S.REMOVED: frozenset({_S.NONE}),
}

# How a try can end, as its worker writes it (a clear's `running -> none` is not one).
TRY_OUTCOMES: frozenset[TIState] = frozenset(
    {_S.SUCCESS, _S.FAILED, _S.SKIPPED, _S.UP_FOR_RETRY, _S.UP_FOR_RESCHEDULE}
)
FINISHED: frozenset[TIState] = frozenset(
    {_S.SUCCESS, _S.FAILED, _S.SKIPPED, _S.UPSTREAM_FAILED, _S.REMOVED}
)
SUCCEEDED: frozenset[TIState] = frozenset({_S.SUCCESS, _S.SKIPPED})
FAILED_STATES: frozenset[TIState] = frozenset({_S.FAILED, _S.UPSTREAM_FAILED})
# Holding pool slots and counting toward concurrency limits.
ACTIVE: frozenset[TIState] = frozenset({_S.QUEUED, _S.RUNNING})
# Waiting for a due time, not blocked: never evidence of a deadlock.
WAITING: frozenset[TIState] = frozenset({_S.UP_FOR_RETRY, _S.UP_FOR_RESCHEDULE})


class RunState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"


_R = RunState

RUN_TRANSITIONS: dict[RunState, frozenset[RunState]] = {
    _R.QUEUED: frozenset({_R.RUNNING, _R.FAILED}),
    _R.RUNNING: frozenset({_R.SUCCESS, _R.FAILED}),
    _R.SUCCESS: frozenset({_R.QUEUED}),
    _R.FAILED: frozenset({_R.QUEUED}),
}

RUN_FINISHED: frozenset[RunState] = frozenset({RunState.SUCCESS, RunState.FAILED})


class BackfillState(enum.StrEnum):
    QUEUED = "queued"  # created; no coordinator has picked it up yet
    RUNNING = "running"
    PAUSED = "paused"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"


_B = BackfillState

BACKFILL_TRANSITIONS: dict[BackfillState, frozenset[BackfillState]] = {
    _B.QUEUED: frozenset({_B.RUNNING, _B.SUCCESS, _B.CANCELLED}),
    _B.RUNNING: frozenset({_B.PAUSED, _B.SUCCESS, _B.FAILED, _B.CANCELLED}),
    _B.PAUSED: frozenset({_B.RUNNING, _B.CANCELLED}),
    _B.SUCCESS: frozenset({_B.RUNNING}),
    _B.FAILED: frozenset({_B.RUNNING}),
    _B.CANCELLED: frozenset(),
}

BACKFILL_FINISHED: frozenset[BackfillState] = frozenset({_B.SUCCESS, _B.FAILED, _B.CANCELLED})

# A state of any of the three kinds; its table is chosen by its enum.
State = TypeVar("State", TIState, RunState, BackfillState)

_TABLES: dict[type[enum.StrEnum], tuple[str, dict[Any, frozenset[Any]]]] = {
    TIState: ("TRANSITIONS", TRANSITIONS),
    RunState: ("RUN_TRANSITIONS", RUN_TRANSITIONS),
    BackfillState: ("BACKFILL_TRANSITIONS", BACKFILL_TRANSITIONS),
}


def transitions_of(kind: type[State]) -> dict[State, frozenset[State]]:
    """The transition table of `kind`: TIState, RunState or BackfillState."""
    return _TABLES[kind][1]


def sources_of(target: State) -> frozenset[State]:
    """The states from which `target` may be reached, in its enum's table."""
    table = transitions_of(type(target))
    return frozenset(src for src, dsts in table.items() if target in dsts)


def source(src: State, *targets: State) -> State:
    """`src`, checked against its enum's table to lead to each of `targets`: a statement
    that moves rows out of one named state names it through this, so the table is checked
    when the statement is built (at import; at the call for a state read at run time),
    not trusted."""
    name, table = _TABLES[type(src)]
    illegal = [t.value for t in targets if t not in table[src]]
    if illegal:
        raise ValueError(f"{src.value} -> {', '.join(illegal)} is not in {name}")
    return src
