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

from backfill.cli.output import BACKFILL_ID, warn
from backfill.client.control import cancel, pause, revoke
from backfill.config import Settings
from backfill.store import control
from backfill.store.errors import BackfillNotFound


@click.command("pause")
@click.argument("backfill_id", metavar="ID", type=BACKFILL_ID)
def pause_command(backfill_id: int) -> None:
    """Pause running backfill ID: no new TI is dispatched until `backfill resume ID`."""
    with control.writing(Settings.from_env(), create=False) as conn:
        if conn is None:
            raise BackfillNotFound(backfill_id)
        pause(conn, backfill_id)
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
        done = cancel(conn, backfill_id, abort=abort, actor=actor)
    withdrawn, stopped = done["withdrawn"], done["stopped"]
    noun = "task instance" if withdrawn == 1 else "task instances"
    if not abort:
        click.echo(
            f"backfill {backfill_id} cancelled: {withdrawn} queued {noun} withdrawn; "
            "running ones finish normally"
        )
        return
    failed_to_revoke = revoke(settings, backfill_id)
    if failed_to_revoke:
        warn(failed_to_revoke)
    click.echo(
        f"backfill {backfill_id} cancelled (abort): {withdrawn} queued {noun} withdrawn "
        f"and revoked, {stopped} running tr{'y' if stopped == 1 else 'ies'} stopped "
        "(failed, cancelled)"
    )
