"""`backfill pools set|list|delete`: the pools every backfill shares.

Invariants:
- the rules (names, slots, what may be deleted) live in `store.pools` and
  are checked before or inside the one writing statement: a refusal is one
  line, exit 2, and nothing written;
- `pools set` may create the embedded database (a pool can be set up before
  the first backfill); `list` and `delete` never do.
"""

from __future__ import annotations

from typing import Any

import click

from backfill.cli.output import OutputFormat, console, emit_json, output_option, table
from backfill.config import Settings
from backfill.store import control, pools, status
from backfill.store.errors import PoolError
from backfill.store.pools import Pool


def _slots(_ctx: click.Context, _param: click.Parameter, value: str) -> int:
    """SLOTS: an integer, or `unlimited` (= -1); the range is checked by `store.pools`."""
    text = value.strip()
    if text.lower() == "unlimited":
        return pools.UNLIMITED
    try:
        return int(text)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a number of slots (an integer, or -1 / unlimited)"
        ) from None


@click.group("pools")
def pools_group() -> None:
    """Pools: named budgets of worker slots shared by every backfill."""


# ignore_unknown_options: `-1` (unlimited) is a value, not an unknown option.
@pools_group.command("set", context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("slots", callback=_slots)
@click.option("--description", "-d", metavar="TEXT", help="What the pool is for.")
def set_command(name: str, slots: int, description: str | None) -> None:
    """Create pool NAME with SLOTS slots, or resize it (-1 or `unlimited`: no limit)."""
    pools.check_name(name)
    pools.check_slots(slots)
    with control.writing(Settings.from_env(), create=True) as conn:
        assert conn is not None  # create=True always opens a database
        pools.upsert(conn, name, slots, description=description)
    size = "unlimited slots" if slots == pools.UNLIMITED else f"{slots} slots"
    click.echo(f"pool {name} set to {size}")


@pools_group.command("list")
@output_option
def list_command(output: OutputFormat) -> None:
    """Every pool: slots, description, and the slots its queued and running TIs hold."""
    with status.reading(Settings.from_env()) as conn:
        rows = [] if conn is None else pools.list_all(conn)
    if output is OutputFormat.JSON:
        emit_json([pool_json(pool) for pool in rows])
        return
    if not rows:
        click.echo("no pools yet: the database does not exist; `backfill pools set` creates it")
        return
    tbl = table("name", "slots", "queued", "running", "open", "description")
    for pool in rows:
        tbl.add_row(
            pool.name,
            _size(pool.slots),
            str(pool.queued_slots),
            str(pool.running_slots),
            _size(pool.open_slots),
            pool.description,
        )
    console().print(tbl)


def _size(slots: int | None) -> str:
    return "unlimited" if slots is None or slots == pools.UNLIMITED else str(slots)


def pool_json(pool: Pool) -> dict[str, Any]:
    return {
        "name": pool.name,
        "slots": pool.slots,
        "description": pool.description,
        "queued_slots": pool.queued_slots,
        "running_slots": pool.running_slots,
        "occupied_slots": pool.occupied_slots,
        "open_slots": pool.open_slots,
    }


@pools_group.command("delete")
@click.argument("name")
def delete_command(name: str) -> None:
    """Delete pool NAME (not default_pool, nor a pool with queued or running TIs)."""
    pools.check_deletable(name)
    with control.writing(Settings.from_env(), create=False) as conn:
        if conn is None:  # no database yet: no pool but the implicit default_pool
            raise PoolError(f"no pool named {name!r}; see `backfill pools list`")
        pools.delete(conn, name)
    click.echo(f"pool {name} deleted")
