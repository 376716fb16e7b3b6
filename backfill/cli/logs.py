"""`backfill logs ID TASK_ID [-d DATE] [-m N] [--try N] [--follow]`: one TI try's log.

Invariants:
- read only, through the metadata DB: any host reads any worker's logs, and
  a worker killed mid-try leaves what it had flushed;
- the log is printed as stored (each line stamped by the worker), after a
  header naming the try (who claimed it, when, how it ended, from the
  journal); what the worker's cap cut from its head is said, with how many
  bytes, never silently skipped;
- `--follow` polls for new chunks every `FOLLOW_POLL` seconds while the try
  runs (or is about to: a TI not started yet is waited for, unless its
  backfill has ended) and ends after the try has ended and its last chunk was
  printed; Ctrl-C exits 130;
- `-d` reads a date without an offset in UTC, as `backfill tasks` does; a
  date alone also matches the one run on that UTC day, and several runs that
  day are listed so the operator can pick one;
- `-m/--map-index N` picks a mapped task's TI; a mapped task without it exits
  2 naming its map indexes (`client.logs.find_ti`); the header names the TI
  `task[N]`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import click
from sqlalchemy.engine import Connection, Engine

from backfill.cli.output import BACKFILL_ID, OutputFormat, emit_json, output_option
from backfill.client.logs import find_ti, logs_json, pick_try, still_running, ti_key
from backfill.config import Settings
from backfill.errors import UserError
from backfill.model.states import TIState
from backfill.store import db, logs, reads
from backfill.store.errors import BackfillNotFound
from backfill.store.logs import LoggedTI

FOLLOW_POLL = 0.5  # seconds between two reads of a followed try


@click.command("logs")
@click.argument("backfill_id", metavar="ID", type=BACKFILL_ID)
@click.argument("task_id")
@click.option("-d", "--date", "date", metavar="DATE", help="The TI's logical date.")
@click.option(
    "-m",
    "--map-index",
    "map_index",
    type=click.IntRange(min=-1),
    help="A mapped task's TI, by its map index (`backfill tasks` shows task[N]).",
)
@click.option("--try", "try_number", type=click.IntRange(min=1), help="Default: the latest.")
@click.option("--follow", "-f", is_flag=True, help="Stream a running try until it ends.")
@output_option
def logs_command(
    *,
    backfill_id: int,
    task_id: str,
    date: str | None,
    map_index: int | None,
    try_number: int | None,
    follow: bool,
    output: OutputFormat,
) -> None:
    """The log of one try of TASK_ID in backfill ID: what it printed and logged.

    `-d DATE` is needed when the backfill has several dates (YYYY-MM-DD or ISO
    8601; UTC unless it has an offset); `-m N` when TASK_ID is mapped (its TI
    of map index N). `--follow` streams a running try.
    """
    if follow and output is OutputFormat.JSON:
        raise UserError("--follow streams text: drop --output json, or drop --follow")
    engine = db.open_engine(Settings.from_env(), create=False)
    if engine is None:
        raise BackfillNotFound(backfill_id)
    try:
        with reads.reading(engine) as conn:
            target = find_ti(conn, backfill_id, task_id, date, map_index=map_index)
            number = pick_try(target, try_number, follow=follow)
        if output is OutputFormat.JSON:
            with reads.reading(engine) as conn:
                emit_json(logs_json(conn, backfill_id, target, number))
        else:
            _print(engine, target, number, follow=follow)
    finally:
        engine.dispose()


def _header(conn: Connection, target: LoggedTI, number: int) -> str:
    history = logs.try_history(conn, target.ti_id, number)
    line = f"{ti_key(target)} try {number}"
    if history.claimed_at is None:
        return line + ": not started yet"
    line += f", claimed by {history.claimed_by} at {history.claimed_at.isoformat(sep=' ')}"
    if history.ended_at is None:
        return line + ", running"
    return line + f", ended {history.ended_as} at {history.ended_at.isoformat(sep=' ')}"


def _print(engine: Engine, target: LoggedTI, number: int, *, follow: bool) -> None:
    with reads.reading(engine) as conn:
        click.echo(_header(conn, target, number))
    for piece in _pieces(engine, target, number, follow=follow):
        click.echo(piece, nl=False)
    footer = _footer(engine, target, number)
    if footer:
        click.echo(footer)


def _pieces(engine: Engine, target: LoggedTI, number: int, *, follow: bool) -> Iterator[str]:
    """The try's log as stored, piece by piece, with a notice where its head was cut;
    following, until the try has ended and its last chunk was read."""
    next_byte = 0
    while True:
        with reads.reading(engine) as conn:
            now = logs.current(conn, target.ti_id)
            ended = not follow or not still_running(now, number)
            chunks = logs.read(conn, ti_id=target.ti_id, try_number=number, after=next_byte)
        if chunks and chunks[0].start_byte > next_byte:
            cut = chunks[0].start_byte - next_byte
            yield (
                f"[... {cut} bytes cut: a try's log keeps its last BACKFILL_LOG_MAX_BYTES ...]\n"
            )
        for chunk in chunks:
            yield chunk.data
        if chunks:
            last = chunks[-1]
            next_byte = last.start_byte + len(last.data.encode())
            continue  # more may be stored beyond one read's limit
        if ended:
            return
        time.sleep(FOLLOW_POLL)


def _footer(engine: Engine, target: LoggedTI, number: int) -> str | None:
    """How the try failed, when it is the TI's latest and ended without success."""
    with reads.reading(engine) as conn:
        history = logs.try_history(conn, target.ti_id, number)
        now = logs.current(conn, target.ti_id)
    if history.ended_as in (None, TIState.SUCCESS.value) or now.try_number != number:
        return None
    if now.last_error is None:
        return None
    return f"[try {number} ended {history.ended_as}: {now.last_error}]"
