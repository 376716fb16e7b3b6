"""`backfill pause ID`, `backfill cancel ID`: stop dispatching, for a while or for good.

Invariants:
- each command is one transaction whose first statement is a compare-and-set
  on the backfill's state (`store.control`); a backfill in the wrong state is
  refused with one line naming its state, exit 2, nothing written;
- neither ever creates the embedded database: without one there is no
  backfill to act on;
- `cancel` withdraws queued TIs in the same transaction, so no new try
  starts; running tries finish normally. `cancel --abort` also fails and
  fences the running tries in that transaction (their workers stop them
  within two heartbeat intervals), then, once committed, asks the workers
  to revoke the backfill's messages still in the broker: best effort, the
  database already withdrew them. (`resume` lives with `run`.)
"""

from __future__ import annotations

import os
import socket

import click
import pendulum

from backfill.broker.app import make_celery
from backfill.cli.output import BACKFILL_ID, warn
from backfill.config import Settings
from backfill.engine.dispatch import revoke_backfill
from backfill.store import control
from backfill.store.errors import BackfillNotFound


@click.command("pause")
@click.argument("backfill_id", metavar="ID", type=BACKFILL_ID)
def pause_command(backfill_id: int) -> None:
    """Pause running backfill ID: no new TI is dispatched until `backfill resume ID`."""
    with control.writing(Settings.from_env(), create=False) as conn:
        if conn is None:
            raise BackfillNotFound(backfill_id)
        control.pause(conn, backfill_id, now=pendulum.now("UTC"))
    click.echo(
        f"backfill {backfill_id} paused: queued and running task instances finish, no new one "
        f"is dispatched; `backfill resume {backfill_id}` continues it"
    )


@click.command("cancel")
@click.argument("backfill_id", metavar="ID", type=BACKFILL_ID)
@click.option(
    "--abort",
    is_flag=True,
    help="Also stop running tries now: each ends failed, cancelled (default: they finish).",
)
def cancel_command(backfill_id: int, abort: bool) -> None:
    """Cancel backfill ID for good: queued TIs are withdrawn, running ones finish
    (or, with --abort, are stopped and fail)."""
    actor = f"cli:{socket.gethostname()}:{os.getpid()}"  # the journal's record of who
    settings = Settings.from_env()
    with control.writing(settings, create=False) as conn:
        if conn is None:
            raise BackfillNotFound(backfill_id)
        now = pendulum.now("UTC")
        if abort:
            done = control.abort(conn, backfill_id, actor=actor, now=now)
        else:
            done = control.Aborted(control.cancel(conn, backfill_id, actor=actor, now=now), 0)
    noun = "task instance" if done.withdrawn == 1 else "task instances"
    if not abort:
        click.echo(
            f"backfill {backfill_id} cancelled: {done.withdrawn} queued {noun} withdrawn; "
            "running ones finish normally"
        )
        return
    _revoke(settings, backfill_id)
    click.echo(
        f"backfill {backfill_id} cancelled (abort): {done.withdrawn} queued {noun} withdrawn "
        f"and revoked, {done.stopped} running tr{'y' if done.stopped == 1 else 'ies'} stopped "
        "(failed, cancelled)"
    )


def _revoke(settings: Settings, backfill_id: int) -> None:
    app = make_celery(settings)
    try:
        revoke_backfill(app, backfill_id)
    except Exception as exc:  # best effort: the database withdrew the tries already
        warn(
            f"could not ask the workers to revoke backfill {backfill_id}'s messages "
            f"({exc}); they are withdrawn anyway: a worker acks each as a no-op"
        )
    finally:
        app.close()
