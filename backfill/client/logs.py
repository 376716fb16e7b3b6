"""One TI try's log: `backfill logs` and `GET .../task_instances/{task_id}/{date}/logs`.

Invariants:
- read only, through the metadata DB: any host reads any worker's logs, and
  a worker killed mid-try leaves what it had flushed;
- `date` reads a date without an offset in UTC, as `backfill tasks` does; a
  date alone also matches the one run on that UTC day, and several runs that
  day are a `UserError` listing them, so the operator can pick one;
- a TI is keyed by its map index too (-1 unless given): a mapped task's TI
  needs one (`map_index`), and a mapped task asked without one is a
  `UserError` naming its map indexes; a `removed` TI (history: a mapped
  task's placeholder, or an element dropped by a re-mapping) is found only
  when asked for by its map index, or when nothing else is left;
- the JSON says how many bytes the worker's cap cut from the log's head
  (`cut_bytes`), never silently skipped.
"""

from __future__ import annotations

import dataclasses
import functools
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

_INSTANT = timedelta(microseconds=1)  # [moment, moment + _INSTANT): that moment alone
_REMOVED = TIState.REMOVED.value
MAP_INDEX_HINT = "--map-index N (in the API: map_index=N)"


def find_ti(
    conn: Connection,
    backfill_id: int,
    task_id: str,
    date: str | None,
    *,
    map_index: int | None = None,
) -> LoggedTI:
    """The TI of `task_id` on `date` (a date alone: the one run that UTC day) with map
    index `map_index`; None: the task's only TI there, which a mapped task has not."""
    if not status.exists(conn, backfill_id):
        raise BackfillNotFound(backfill_id)
    # Every (run, task) has one TI of map index -1 or 0 (`store.mapping`): it finds the
    # run, one row a date, whatever the task maps over.
    run_ti = task_on(conn, backfill_id, task_id, date)
    task_key = ti_key(dataclasses.replace(run_ti, map_index=-1))  # the task on that date
    indexes = logs.map_states(conn, run_ti.dag_run_id, task_id)
    if map_index is None:
        live = [i for i, state in indexes.items() if state != _REMOVED]
        if live:
            raise UserError(
                f"{task_key} is a mapped task with map indexes "
                f"{_indexes(live)}: pick one with {MAP_INDEX_HINT}"
            )
        return run_ti
    if map_index == -1 and run_ti.map_index == -1:
        return run_ti
    if map_index not in indexes:
        has = f"map indexes {_indexes(list(indexes))}" if indexes else "no map index (not mapped)"
        raise TINotFound(f"{task_key} has no map index {map_index}: it has {has}")
    start = run_ti.logical_date
    (found,) = logs.find_tis(
        conn, backfill_id, task_id, start=start, end=start + _INSTANT, map_indexes=[map_index]
    )
    return found


def _indexes(indexes: list[int]) -> str:
    """`0 to 41` when they run on without a gap, else the first ones: `0, 2, 5, ...`."""
    if len(indexes) > 2 and indexes == list(range(indexes[0], indexes[-1] + 1)):
        return f"{indexes[0]} to {indexes[-1]}"
    return ", ".join(map(str, indexes[:8])) + (", ..." if len(indexes) > 8 else "")


def task_on(conn: Connection, backfill_id: int, task_id: str, date: str | None) -> LoggedTI:
    """The one TI of `task_id` on `date` of map index -1 or 0 (its run's, whether or not
    it is mapped), or a `UserError` / `TINotFound` saying why there is not one."""
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
    """The TIs of map index -1 or 0 of `task_id` on `date`: one a run."""
    find = functools.partial(logs.find_tis, conn, backfill_id, task_id, map_indexes=(-1, 0))
    if date is None:
        return find(limit=6)
    moment = parse_cli_date(date, pendulum.UTC, option="-d/--date")
    exact = find(start=moment, end=moment + _INSTANT)
    if exact or len(date.strip()) != len("YYYY-MM-DD"):
        return exact
    return find(start=moment, end=moment + timedelta(days=1))


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
    """`dag/task 2024-01-01T00:00:00+00:00`; a mapped task's TI `dag/task[3] ...`."""
    task = target.task_id if target.map_index < 0 else f"{target.task_id}[{target.map_index}]"
    return f"{target.dag_id}/{task} {target.logical_date.isoformat()}"


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
        "map_index": target.map_index,
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
