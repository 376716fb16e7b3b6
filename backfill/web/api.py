"""The JSON API under `/api/v1` (DESIGN section 7), thin over `backfill.client`.

Invariants:
- every answer is built by the same function as the CLI's JSON
  (`backfill.client`): `GET /backfills` is `list -o json`, `GET
  /backfills/{id}` is `status ID -o json`, `GET .../task_instances` is
  `tasks ID -o json`, a log is `logs ... -o json`, a create is `create -o
  json` (`--dry-run`: the plan), a clear is `clear -o json`;
- a body is validated by pydantic for its types (422, naming the field),
  then by the client for its meaning (400, the CLI's own message): nothing
  is written before both pass;
- each operation is the app's `backfill.Client`'s (`who="web"` in the journals),
  the one Python programs use; reads are one snapshot each (`router`); every
  write is one transaction and needs a writer (`writes`: `auth.Auth.check_write`,
  which checks the reader too).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

import pendulum
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt
from sqlalchemy.engine import Connection

from backfill.client.client import Client
from backfill.client.database import Database
from backfill.client.grid import grid_json
from backfill.client.listing import listing
from backfill.client.shapes import task_json_text
from backfill.client.story import read_story, status_json
from backfill.client.tasks import page_rows, tasks_query
from backfill.model.states import BackfillState, TIState
from backfill.store import status
from backfill.store.errors import BackfillNotFound
from backfill.store.status import Summary
from backfill.web.auth import Auth

BackfillId = Annotated[int, Path(ge=1, le=2**31 - 1, description="The backfill's id.")]
MapIndex = Annotated[
    int | None,
    Query(ge=-1, description="A mapped task's TI, by its map index; needed for a mapped task."),
]
TASKS_PAGE = 100  # TIs a listing gives unless `limit` says otherwise (0: all), as the CLI


def _store(request: Request) -> Database:
    store: Database = request.app.state.client.database
    return store


def _client(request: Request) -> Client:
    client: Client = request.app.state.client
    return client


def reader(request: Request) -> None:
    auth: Auth = request.app.state.auth
    auth.check_read(request)


def writer(request: Request) -> None:
    auth: Auth = request.app.state.auth
    auth.check_write(request)


router = APIRouter(prefix="/api/v1", dependencies=[Depends(reader)], tags=["backfills"])
writes = APIRouter(prefix="/api/v1", dependencies=[Depends(writer)], tags=["backfills"])
Store = Annotated[Database, Depends(_store)]
Backfills = Annotated[Client, Depends(_client)]  # the operations, as `backfill.Client`


def _summary(conn: Connection, backfill_id: int) -> Summary:
    found = status.summary(conn, backfill_id)
    if found is None:
        raise BackfillNotFound(backfill_id)
    return found


class CreateBody(BaseModel):
    """`backfill create`'s arguments and options, by their flag names (`-` as `_`)."""

    model_config = ConfigDict(extra="forbid")

    dag_id: str
    start: str = Field(description="First date (YYYY-MM-DD or ISO 8601), in the DAG's timezone.")
    end: str = Field(description="Last date, inclusive.")
    reprocess: str = "none"
    conf: dict[str, Any] | None = None
    max_active_runs: StrictInt | None = None
    task_regex: str | None = None
    pool: str | None = None
    rerun_failed_tasks: StrictBool = False
    mark_success: StrictBool = False
    run_backwards: StrictBool = False
    ignore_first_depends_on_past: StrictBool = False
    ignore_dependencies: StrictBool = False
    continue_on_failures: StrictBool = False
    disable_retry: StrictBool = False
    dry_run: StrictBool = False


class CancelBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    abort: StrictBool = False


class ClearBody(BaseModel):
    """`backfill clear`'s options; `--yes` is implied (the page asks first)."""

    model_config = ConfigDict(extra="forbid")

    task_regex: str | None = None
    states: list[str] = []
    start: str | None = None
    end: str | None = None
    map_indexes: list[int] = []
    downstream: StrictBool = False
    dry_run: StrictBool = False


@router.get("/backfills", summary="Every backfill, newest first (as `backfill list -o json`)")
def list_backfills(
    store: Store,
    state: Annotated[BackfillState | None, Query()] = None,
    limit: Annotated[int, Query(ge=0)] = 0,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[dict[str, Any]]:
    with store.reading() as conn:
        return [] if conn is None else listing(conn, state, limit=limit or None, offset=offset)


@writes.post(
    "/backfills",
    status_code=201,
    summary="Create a backfill for a `backfill coordinator` (as `backfill create -o json`)",
)
def create(body: CreateBody, client: Backfills, response: Response) -> dict[str, Any]:
    options = body.model_dump(exclude={"dag_id", "start", "end", "dry_run"}, exclude_none=True)
    if body.dry_run:
        response.status_code = 200
        return client.plan(body.dag_id, body.start, body.end, **options)
    backfill_id = client.create(body.dag_id, body.start, body.end, **options)
    response.headers["Location"] = f"/api/v1/backfills/{backfill_id}"
    return {"id": backfill_id}


@router.get("/backfills/{backfill_id}", summary="One backfill (as `backfill status ID -o json`)")
def get_backfill(backfill_id: BackfillId, client: Backfills) -> dict[str, Any]:
    return client.status(backfill_id)


@router.get(
    "/backfills/{backfill_id}/grid",
    summary="The grid: dates x tasks, a state a cell, with the backfill's status",
)
def get_grid(backfill_id: BackfillId, store: Store) -> dict[str, Any]:
    with store.reading_about(backfill_id) as conn:
        found = _summary(conn, backfill_id)
        story = read_story(conn, found, now=pendulum.now("UTC"))
        return {**grid_json(conn, found), "status": status_json(found, story)}


@router.get(
    "/backfills/{backfill_id}/task_instances",
    summary="The backfill's TIs, filtered and paged (as `backfill tasks ID -o json`)",
)
def list_task_instances(
    backfill_id: BackfillId,
    store: Store,
    *,
    state: Annotated[list[TIState], Query()] = [],  # noqa: B006 (FastAPI copies it)
    task_regex: str | None = None,
    start: str | None = None,
    end: str | None = None,
    limit: Annotated[int, Query(ge=0, description="At most this many; 0: all.")] = TASKS_PAGE,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> StreamingResponse:
    query = tasks_query(
        backfill_id,
        states=[s.value for s in state],
        task_regex=task_regex,
        start=start,
        end=end,
        limit=limit or None,
        offset=offset,
    )
    with store.reading_about(backfill_id) as conn:
        if not status.exists(conn, backfill_id):
            raise BackfillNotFound(backfill_id)

    def stream() -> Iterator[str]:  # in a snapshot of its own, row by row
        with store.reading() as conn:
            assert conn is not None
            rows = (task_json_text(row) for row in page_rows(conn, query))
            first = next(rows, None)
            yield "[" if first is None else "[" + first
            for text in rows:
                yield ", " + text
            yield "]"

    return StreamingResponse(stream(), media_type="application/json")


@router.get(
    "/backfills/{backfill_id}/task_instances/{task_id}/{logical_date}",
    summary="One TI with its tries",
)
def get_task_instance(
    backfill_id: BackfillId,
    task_id: str,
    logical_date: str,
    client: Backfills,
    map_index: MapIndex = None,
) -> dict[str, Any]:
    return client.task_instance(backfill_id, task_id, logical_date, map_index=map_index)


@router.get(
    "/backfills/{backfill_id}/task_instances/{task_id}/{logical_date}/logs",
    summary="One try's log (as `backfill logs ID TASK_ID -d DATE -m N --try N -o json`)",
)
def get_logs(
    backfill_id: BackfillId,
    task_id: str,
    logical_date: str,
    client: Backfills,
    *,
    map_index: MapIndex = None,
    try_number: Annotated[int | None, Query(ge=1, description="Default: the latest.")] = None,
) -> dict[str, Any]:
    return client.logs(
        backfill_id, task_id, date=logical_date, map_index=map_index, try_number=try_number
    )


@writes.post("/backfills/{backfill_id}/pause", summary="Stop dispatching (as `backfill pause ID`)")
def pause(backfill_id: BackfillId, client: Backfills) -> dict[str, Any]:
    return client.pause(backfill_id)


@writes.post("/backfills/{backfill_id}/resume", summary="Dispatch again: a coordinator drives it")
def resume(backfill_id: BackfillId, client: Backfills) -> dict[str, Any]:
    return client.resume(backfill_id)


@writes.post(
    "/backfills/{backfill_id}/cancel",
    summary="Cancel for good: drain, or with `abort` stop running tries (as `backfill cancel`)",
)
def cancel(
    backfill_id: BackfillId, client: Backfills, body: CancelBody | None = None
) -> dict[str, Any]:
    return client.cancel(backfill_id, abort=body is not None and body.abort)


@writes.post(
    "/backfills/{backfill_id}/clear",
    summary="Make matching TIs run again (as `backfill clear ID --yes -o json`)",
)
def clear(backfill_id: BackfillId, body: ClearBody, client: Backfills) -> dict[str, Any]:
    return client.clear(backfill_id, **body.model_dump())
