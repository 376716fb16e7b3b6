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

import click

from backfill.cli.output import BACKFILL_ID, warn
from backfill.client.client import Client


@click.command("pause")
@click.argument("backfill_id", metavar="ID", type=BACKFILL_ID)
def pause_command(backfill_id: int) -> None:
    """Pause running backfill ID: no new TI is dispatched until `backfill resume ID`."""
    with Client(who="cli") as client:
        client.pause(backfill_id)
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
    with Client(who="cli") as client:
        done = client.cancel(backfill_id, abort=abort)
    withdrawn, stopped = done["withdrawn"], done["stopped"]
    noun = "task instance" if withdrawn == 1 else "task instances"
    if not abort:
        click.echo(
            f"backfill {backfill_id} cancelled: {withdrawn} queued {noun} withdrawn; "
            "running ones finish normally"
        )
        return
    if done["revoke_warning"]:
        warn(done["revoke_warning"])
    click.echo(
        f"backfill {backfill_id} cancelled (abort): {withdrawn} queued {noun} withdrawn "
        f"and revoked, {stopped} running tr{'y' if stopped == 1 else 'ies'} stopped "
        "(failed, cancelled)"
    )
