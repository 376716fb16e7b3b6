"""Operator control of a backfill: pause, resume and cancel (store).

Invariants:
- each change of a backfill's state is ONE conditional UPDATE from the
  states BACKFILL_TRANSITIONS leads to it from (`runs.set_backfill_state`:
  compare-and-set); a miss of pause or cancel is explained by raising a
  `UserError` naming the state the backfill is actually in, never ignored;
  a miss of resume is returned (`backfill resume` also continues a running
  backfill whose driver died);
- the backfill row is changed FIRST in the transaction: on PostgreSQL that
  waits for a coordinator pass holding the row (`store.runs.lock_backfill`)
  to commit, so the TI statement that follows sees every TI that pass
  queued; on SQLite BEGIN IMMEDIATE serialises the two anyway;
- resuming takes the lease, if it is free, in the transaction that
  un-pauses: no daemon can take it between the two (a daemon drives no
  paused backfill), so the resumer drives at once;
- cancelling sends the backfill's `queued` TIs back to `scheduled` in the
  same transaction: the messages already published for them then match no
  claim (a claim needs `queued` at the message's try), so no new try starts.
  Running tries finish normally, fenced on their own claims as always;
- aborting (`cancel --abort`) also fails every running try in that
  transaction, with `ABORTED` as its error, clearing its claim: its worker's
  next heartbeat matches no row and stops the callable, its outcome is
  refused; and the unfinished runs end `failed` at once, so nothing is left
  queued or running without waiting for a coordinator.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NoReturn

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from backfill.config import Settings
from backfill.model.states import BACKFILL_FINISHED, BackfillState
from backfill.store import adopt, db
from backfill.store.errors import BackfillNotFound, BackfillStateConflict
from backfill.store.lease import acquire_lease
from backfill.store.runs import set_backfill_state
from backfill.store.schema import backfills

bf = backfills
_B = BackfillState


@contextmanager
def writing(settings: Settings, *, create: bool) -> Iterator[Connection | None]:
    """One transaction, committed if the block succeeds; None if the embedded DB is absent.

    `create` makes the embedded SQLite database on first use, for a write that
    makes sense on an empty database (`pools set`); without it a command that
    can only fail on an empty database writes nothing, not even the file.
    """
    engine = db.open_engine(settings, create=create)
    if engine is None:
        yield None
        return
    try:
        with engine.begin() as conn:
            yield conn
    finally:
        engine.dispose()


def pause(conn: Connection, backfill_id: int, *, now: datetime) -> None:
    """running -> paused: coordinators stop dispatching; queued and running TIs go on."""
    if not set_backfill_state(conn, backfill_id, _B.PAUSED, now=now):
        _refuse(conn, backfill_id, "pause")


def resume(
    conn: Connection, backfill_id: int, *, owner: str, now: datetime, ttl: timedelta
) -> bool:
    """paused -> running, and the driver lease to `owner` if it is free (`lease.acquire_lease`;
    held by a live driver, it stays its). False: the backfill was not paused (nothing changed)."""
    if not set_backfill_state(conn, backfill_id, _B.RUNNING, seen=_B.PAUSED, now=now):
        return False
    acquire_lease(conn, backfill_id, owner=owner, now=now, ttl=ttl)
    return True


def unpause(conn: Connection, backfill_id: int, *, now: datetime) -> None:
    """paused -> running, taking no lease: a `backfill coordinator` adopts it and drives it."""
    if not set_backfill_state(conn, backfill_id, _B.RUNNING, seen=_B.PAUSED, now=now):
        _refuse(conn, backfill_id, "resume")


def cancel(conn: Connection, backfill_id: int, *, actor: str, now: datetime) -> int:
    """queued/running/paused -> cancelled, and its queued TIs back to scheduled.

    Returns how many queued TIs were withdrawn.
    """
    if not set_backfill_state(conn, backfill_id, _B.CANCELLED, now=now):
        _refuse(conn, backfill_id, "cancel")
    return len(adopt.unqueue(conn, backfill_id, actor=actor, now=now))


@dataclass(frozen=True)
class Aborted:
    withdrawn: int  # queued TIs sent back to scheduled
    stopped: int  # running tries fenced and failed


def abort(conn: Connection, backfill_id: int, *, actor: str, now: datetime) -> Aborted:
    """`cancel`, and every running try of the backfill fenced and failed (see invariants)."""
    withdrawn = cancel(conn, backfill_id, actor=actor, now=now)
    error = f"Cancelled: backfill {backfill_id} was cancelled with --abort by {actor}"
    stopped = adopt.fail_running(conn, backfill_id, error=error, actor=actor, now=now)
    adopt.fail_unfinished_runs(conn, backfill_id, now=now)
    return Aborted(withdrawn=withdrawn, stopped=len(stopped))


def _refuse(conn: Connection, backfill_id: int, verb: str) -> NoReturn:
    """Explain a compare-and-set miss: the backfill is unknown or in the wrong state."""
    found = conn.execute(sa.select(bf.c.state).where(bf.c.id == backfill_id)).scalar()
    if found is None:
        raise BackfillNotFound(backfill_id)
    state = BackfillState(found)
    if state in BACKFILL_FINISHED or (verb == "pause" and state is _B.PAUSED):
        raise BackfillStateConflict(f"backfill {backfill_id} is already {state}")
    if verb == "resume":
        raise BackfillStateConflict(
            f"backfill {backfill_id} is {state}: only a paused backfill can be resumed"
        )
    # Only `pause` of a queued backfill gets here: no coordinator has started it.
    raise BackfillStateConflict(
        f"backfill {backfill_id} is {state}: only a running backfill can be paused; "
        f"cancel it with `backfill cancel {backfill_id}`"
    )
