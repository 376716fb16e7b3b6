"""`backfill pause ID`, `backfill cancel ID`: stop dispatching, for a while or for good.

Invariants:
- each command is one transaction whose first statement is a compare-and-set
  on the backfill's state (`store.control`); a backfill in the wrong state is
  refused with one line naming its state, exit 2, nothing written;
- neither ever creates the embedded database: without one there is no
  backfill to act on;
- `cancel` withdraws queued TIs in the same transaction, so no new try
  starts; running tries finish normally. (`resume` lives with `run`.)
"""

from __future__ import annotations

import os
import socket

import click
import pendulum

from backfill.cli.output import BACKFILL_ID
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
        control.pause(conn, backfill_id, now=pendulum.now("UTC"))
    click.echo(
        f"backfill {backfill_id} paused: queued and running task instances finish, no new one "
        f"is dispatched; `backfill resume {backfill_id}` continues it"
    )


@click.command("cancel")
@click.argument("backfill_id", metavar="ID", type=BACKFILL_ID)
def cancel_command(backfill_id: int) -> None:
    """Cancel backfill ID for good: queued TIs are withdrawn, running ones finish."""
    actor = f"cli:{socket.gethostname()}:{os.getpid()}"  # the journal's record of who
    with control.writing(Settings.from_env(), create=False) as conn:
        if conn is None:
            raise BackfillNotFound(backfill_id)
        withdrawn = control.cancel(conn, backfill_id, actor=actor, now=pendulum.now("UTC"))
    noun = "task instance" if withdrawn == 1 else "task instances"
    click.echo(
        f"backfill {backfill_id} cancelled: {withdrawn} queued {noun} withdrawn; "
        "running ones finish normally"
    )
