"""One TI try's log: `backfill logs` and `GET .../task_instances/{task_id}/{date}/logs`.

Invariants:
- read only, through the metadata DB: any host reads any worker's logs, and
  a worker killed mid-try leaves what it had flushed;
- `date` reads a date without an offset in UTC, as `backfill tasks` does; a
  date alone also matches the one run on that UTC day, and several runs that
  day are a `UserError` listing them, so the operator can pick one;
- the JSON says how many bytes the worker's cap cut from the log's head
  (`cut_bytes`), never silently skipped.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from sqlalchemy.engine import Connection

from backfill.client.errors import TINotFound
from backfill.client.shapes import iso
from backfill.errors import UserError
from backfill.model.dates import parse_cli_date
from backfill.model.states import ACTIVE, BACKFILL_FINISHED, BackfillState, TIState
from backfill.store import logs, status
from backfill.store.errors import BackfillNotFound
from backfill.store.logs import LoggedTI


def find_ti(conn: Connection, backfill_id: int, task_id: str, date: str | None) -> LoggedTI:
    if not status.exists(conn, backfill_id):
        raise BackfillNotFound(backfill_id)
    found = _matching(conn, backfill_id, task_id, date)
    if len(found) == 1:
        return found[0]
    on = "" if date is None else f" on {date}"
    if not found:
        raise TINotFound(
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


def pick_try(target: LoggedTI, asked: int | None, *, follow: bool) -> int:
    latest = target.try_number
    if asked is None:
        if latest == 0 and not follow:
            raise UserError(
                f"{ti_key(target)} has not started a try yet (state {target.state}); "
                "add --follow to wait for its first try"
            )
        return max(latest, 1)
    if asked > latest and not (follow and asked == latest + 1):
        raise UserError(
            f"{ti_key(target)} has no try {asked}: it has had "
            + ("none yet" if latest == 0 else f"tries 1 to {latest}")
        )
    return asked


def ti_key(target: LoggedTI) -> str:
    return f"{target.dag_id}/{target.task_id} {target.logical_date.isoformat()}"


def still_running(now: logs.Current, number: int) -> bool:
    """Whether try `number` may still write: it is the TI's active try, or its next one
    and the backfill has not ended (an ended backfill starts no try)."""
    if now.try_number < number:
        return BackfillState(now.backfill_state) not in BACKFILL_FINISHED
    return now.try_number == number and TIState(now.state) in ACTIVE


def logs_json(conn: Connection, backfill_id: int, target: LoggedTI, number: int) -> dict[str, Any]:
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
