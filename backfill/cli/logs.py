"""`backfill logs ID TASK_ID [-d DATE] [--try N] [--follow]`: one TI try's log.

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
  day are listed so the operator can pick one.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import click
import pendulum
from sqlalchemy.engine import Connection, Engine

from backfill.cli.output import BACKFILL_ID, OutputFormat, emit_json, iso, output_option
from backfill.config import Settings
from backfill.errors import UserError
from backfill.model.dates import parse_cli_date
from backfill.model.states import ACTIVE, BACKFILL_FINISHED, BackfillState, TIState
from backfill.store import db, logs, reads, status
from backfill.store.errors import BackfillNotFound
from backfill.store.logs import LoggedTI

FOLLOW_POLL = 0.5  # seconds between two reads of a followed try


@click.command("logs")
@click.argument("backfill_id", metavar="ID", type=BACKFILL_ID)
@click.argument("task_id")
@click.option("-d", "--date", "date", metavar="DATE", help="The TI's logical date.")
@click.option("--try", "try_number", type=click.IntRange(min=1), help="Default: the latest.")
@click.option("--follow", "-f", is_flag=True, help="Stream a running try until it ends.")
@output_option
def logs_command(
    *,
    backfill_id: int,
    task_id: str,
    date: str | None,
    try_number: int | None,
    follow: bool,
    output: OutputFormat,
) -> None:
    """The log of one try of TASK_ID in backfill ID: what it printed and logged.

    `-d DATE` is needed when the backfill has several dates (YYYY-MM-DD or ISO
    8601; UTC unless it has an offset). `--follow` streams a running try.
    """
    if follow and output is OutputFormat.JSON:
        raise UserError("--follow streams text: drop --output json, or drop --follow")
    engine = db.open_engine(Settings.from_env(), create=False)
    if engine is None:
        raise BackfillNotFound(backfill_id)
    try:
        with reads.reading(engine) as conn:
            target = _find(conn, backfill_id, task_id, date)
            number = _try_number(target, try_number, follow=follow)
        if output is OutputFormat.JSON:
            with reads.reading(engine) as conn:
                emit_json(_as_json(conn, backfill_id, target, number))
        else:
            _print(engine, target, number, follow=follow)
    finally:
        engine.dispose()


def _find(conn: Connection, backfill_id: int, task_id: str, date: str | None) -> LoggedTI:
    if not status.exists(conn, backfill_id):
        raise BackfillNotFound(backfill_id)
    found = _matching(conn, backfill_id, task_id, date)
    if len(found) == 1:
        return found[0]
    on = "" if date is None else f" on {date}"
    if not found:
        raise UserError(
            f"backfill {backfill_id} has no task instance of {task_id!r}{on}; "
            f"see `backfill tasks {backfill_id}` for its tasks and dates"
        )
    dates = ", ".join(t.logical_date.isoformat() for t in found[:5])
    more = ", ..." if len(found) > 5 else ""
    raise UserError(
        f"backfill {backfill_id} has several task instances of {task_id!r}{on} "
        f"({dates}{more}); pass -d with one of these logical dates"
    )


def _matching(conn: Connection, backfill_id: int, task_id: str, date: str | None) -> list[LoggedTI]:
    if date is None:
        return logs.find_tis(conn, backfill_id, task_id, limit=6)
    moment = parse_cli_date(date, pendulum.UTC, option="-d/--date")
    exact = logs.find_tis(
        conn, backfill_id, task_id, start=moment, end=moment + timedelta(microseconds=1)
    )
    if exact or len(date.strip()) != len("YYYY-MM-DD"):
        return exact
    return logs.find_tis(conn, backfill_id, task_id, start=moment, end=moment + timedelta(days=1))


def _try_number(target: LoggedTI, asked: int | None, *, follow: bool) -> int:
    latest = target.try_number
    if asked is None:
        if latest == 0 and not follow:
            raise UserError(
                f"{_key(target)} has not started a try yet (state {target.state}); "
                "add --follow to wait for its first try"
            )
        return max(latest, 1)
    if asked > latest and not (follow and asked == latest + 1):
        raise UserError(
            f"{_key(target)} has no try {asked}: it has had "
            + ("none yet" if latest == 0 else f"tries 1 to {latest}")
        )
    return asked


def _key(target: LoggedTI) -> str:
    return f"{target.dag_id}/{target.task_id} {target.logical_date.isoformat()}"


def _header(conn: Connection, target: LoggedTI, number: int) -> str:
    history = logs.try_history(conn, target.ti_id, number)
    line = f"{_key(target)} try {number}"
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
            ended = not follow or not _still_running(now, number)
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


def _still_running(now: logs.Current, number: int) -> bool:
    """Whether try `number` may still write: it is the TI's active try, or its next one
    and the backfill has not ended (an ended backfill starts no try)."""
    if now.try_number < number:
        return BackfillState(now.backfill_state) not in BACKFILL_FINISHED
    return now.try_number == number and TIState(now.state) in ACTIVE


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


def _as_json(conn: Connection, backfill_id: int, target: LoggedTI, number: int) -> dict[str, Any]:
    history = logs.try_history(conn, target.ti_id, number)
    chunks = list(logs.read_all(conn, ti_id=target.ti_id, try_number=number))
    first = chunks[0].start_byte if chunks else 0
    return {
        "backfill_id": backfill_id,
        "dag_id": target.dag_id,
        "task_id": target.task_id,
        "run_id": target.run_id,
        "logical_date": target.logical_date.isoformat(),
        "try_number": number,
        "claimed_by": history.claimed_by,
        "started": iso(history.claimed_at),
        "ended": iso(history.ended_at),
        "state": history.ended_as,
        "cut_bytes": first,
        "log": "".join(chunk.data for chunk in chunks),
    }
