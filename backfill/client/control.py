"""Pause, resume and cancel a backfill from anywhere: `backfill pause/cancel` and
`POST /api/v1/backfills/{id}/pause|resume|cancel`. (`backfill resume` also drives the
backfill in the foreground: `cli.resume`.)

Invariants:
- each is one transaction whose first statement is a compare-and-set on the
  backfill's state (`store.control`); a backfill in the wrong state is
  refused with a `UserError` naming its state, nothing written;
- `unpause` only makes a paused backfill run again: it takes no lease, so a
  `backfill coordinator` adopts it and drives it;
- `cancel` withdraws queued TIs in the same transaction, so no new try
  starts; with `abort` it also fails and fences the running tries (their
  workers stop them within two heartbeat intervals). `revoke` then asks the
  workers to drop the backfill's messages still in the broker: best effort,
  the database already withdrew them.
"""

from __future__ import annotations

from typing import Any

import pendulum
from sqlalchemy.engine import Connection

from backfill.broker.app import make_celery
from backfill.config import Settings
from backfill.engine.dispatch import revoke_backfill
from backfill.store import control


def pause(conn: Connection, backfill_id: int) -> dict[str, Any]:
    control.pause(conn, backfill_id, now=pendulum.now("UTC"))
    return {"id": backfill_id, "state": "paused"}


def unpause(conn: Connection, backfill_id: int) -> dict[str, Any]:
    control.unpause(conn, backfill_id, now=pendulum.now("UTC"))
    return {"id": backfill_id, "state": "running"}


def cancel(conn: Connection, backfill_id: int, *, abort: bool, actor: str) -> dict[str, Any]:
    """The backfill cancelled: how many queued TIs were withdrawn and running tries stopped."""
    now = pendulum.now("UTC")
    if abort:
        done = control.abort(conn, backfill_id, actor=actor, now=now)
    else:
        done = control.Aborted(control.cancel(conn, backfill_id, actor=actor, now=now), 0)
    return {
        "id": backfill_id,
        "state": "cancelled",
        "abort": abort,
        "withdrawn": done.withdrawn,
        "stopped": done.stopped,
    }


def revoke(settings: Settings, backfill_id: int) -> str | None:
    """Ask the workers to revoke the backfill's messages; a warning if that failed."""
    app = make_celery(settings)
    try:
        revoke_backfill(app, backfill_id)
    except Exception as exc:  # best effort: the database withdrew the tries already
        return (
            f"could not ask the workers to revoke backfill {backfill_id}'s messages "
            f"({exc}); they are withdrawn anyway: a worker acks each as a no-op"
        )
    finally:
        app.close()
    return None
