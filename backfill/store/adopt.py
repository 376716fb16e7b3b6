"""A backfill's runs beyond the pass: adoption at creation, wind-down at the end. (store)

- Adoption (`--reprocess`): an existing *finished* run joins the new backfill
  in place (one conditional UPDATE from success/failed); its TIs to run again
  are cleared to `none` with Airflow's `max_tries = try_number + retries`, so
  the try numbers keep counting up (`--rerun-failed-tasks` clears only TIs
  still failed or upstream_failed); TIs of tasks the DAG no longer has are
  `removed`. A run or TI that is no longer in the state the plan saw matches
  no row: the caller reports the conflict, it is never overwritten.
- Wind-down: when a backfill ends (failed, deadlocked, cancelled) its runs that
  are still queued or running are set `failed`, so no run stays "in flight"
  forever and blocks a later backfill of the same dates; on cancel, queued TIs
  go back to `scheduled`, which makes their messages lose the claim race.
- `RunConflict` is the one error here: a unique constraint on runs or TIs
  refused a row, i.e. someone created or adopted the same run meanwhile.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from backfill.model.states import FAILED_STATES, RunState, TIState, source, sources_of
from backfill.store.errors import RunConflict
from backfill.store.runs import TaskSpec
from backfill.store.schema import dag_runs, task_instances

ti, run = task_instances, dag_runs
_S = TIState
# Keeps every IN list well under the drivers' bind-parameter limits.
_CHUNK = 2000
_T = TypeVar("_T")
_RESETTABLE = [s.value for s in sources_of(_S.NONE) | {_S.NONE}]
_R = RunState
_ADOPTABLE = sorted(s.value for s in sources_of(_R.QUEUED))  # the finished runs
_UNFINISHED = sorted(s.value for s in sources_of(_R.FAILED))  # queued or running


@contextmanager
def unique_conflicts() -> Iterator[None]:
    """Turn a unique-constraint violation inside the block into `RunConflict`."""
    try:
        yield
    except sa.exc.IntegrityError as exc:
        if not _is_unique_violation(exc):
            raise
        raise RunConflict() from exc


def _is_unique_violation(exc: sa.exc.IntegrityError) -> bool:
    code = getattr(exc.orig, "pgcode", None)
    if code is not None:
        return bool(code == "23505")  # PostgreSQL's unique_violation
    return "UNIQUE constraint failed" in str(exc.orig)


def adopt_runs(
    conn: Connection,
    *,
    backfill_id: int,
    dag_id: str,
    run_ids: Sequence[str],
    conf: dict[str, Any],
    now: datetime,
) -> dict[str, int]:
    """Make finished runs `run_ids` queued runs of the backfill; run_id -> pk of those adopted."""
    adopted: dict[str, int] = {}
    for chunk in _chunks(run_ids):
        stmt = (
            sa.update(run)
            .where(
                run.c.dag_id == dag_id,
                run.c.run_id.in_(chunk),
                run.c.state.in_(_ADOPTABLE),
            )
            .values(
                backfill_id=backfill_id,
                state=_R.QUEUED.value,
                conf=conf,
                start_date=None,
                end_date=None,
                updated_at=now,
            )
            .returning(run.c.run_id, run.c.id)
        )
        adopted.update({row.run_id: row.id for row in conn.execute(stmt)})
    return adopted


def reset_tis(
    conn: Connection,
    *,
    targets: Sequence[tuple[int, str]] | Sequence[tuple[int, str, int]],
    specs: Mapping[str, TaskSpec],
    actor: str,
    now: datetime,
    from_states: Iterable[TIState] | None = None,
) -> set[tuple[int, str, int]]:
    """Clear the finished TIs (dag_run pk, task_id), every map index, or (dag_run pk,
    task_id, map_index), to `none` for another try; the (run pk, task, map index) of
    those reset.

    Each gets its task's current options and `max_tries = try_number +
    retries` (`specs[task_id].max_tries` holds the retries). One statement
    per chunk of targets, a CASE per option over the task ids. `from_states`
    narrows the states a TI is cleared from (every finished state by default).
    """
    sources = _RESETTABLE if from_states is None else _resettable(from_states)
    done: set[tuple[int, str, int]] = set()
    for chunk in _chunks(targets):
        task_ids = sorted({str(target[1]) for target in chunk})
        keyed = (ti.c.dag_run_id, ti.c.task_id, ti.c.map_index)[: len(chunk[0])]

        def per_task(value: str, ids: list[str] = task_ids) -> Any:
            return sa.case({t: getattr(specs[t], value) for t in ids}, value=ti.c.task_id)

        stmt = (
            sa.update(ti)
            .where(sa.tuple_(*keyed).in_(chunk))
            .where(ti.c.state.in_(sources))
            # A mapped task's dropped map index stays removed (`store.mapping`).
            .where(sa.or_(ti.c.state != _S.REMOVED.value, ti.c.map_index < 0))
            .values(
                state=_S.NONE.value,
                max_tries=ti.c.try_number + per_task("max_tries"),
                pool=per_task("pool"),
                pool_slots=per_task("pool_slots"),
                queue=per_task("queue"),
                priority_weight=per_task("priority_weight"),
                claim_token=None,
                next_try_at=None,
                end_date=None,
                last_error=None,
                updated_at=now,
                updated_by=actor,
            )
            .returning(ti.c.dag_run_id, ti.c.task_id, ti.c.map_index)
        )
        done.update((r.dag_run_id, r.task_id, r.map_index) for r in conn.execute(stmt))
    return done


def _resettable(states: Iterable[TIState]) -> list[str]:
    wanted = {s.value for s in states}
    if not wanted <= set(_RESETTABLE):
        raise ValueError(f"cannot clear TIs from {sorted(wanted - set(_RESETTABLE))}")
    return sorted(wanted)


def remove_unknown_tis(
    conn: Connection,
    *,
    dag_run_ids: Sequence[int],
    known_task_ids: Sequence[str],
    actor: str,
    now: datetime,
) -> int:
    """Mark `removed` the finished TIs of these runs whose task the DAG no longer has.

    Two statements (finished -> none -> removed), the only path the
    transition table allows; the journal keeps both steps.
    """
    removed = 0
    for chunk in _chunks(dag_run_ids):
        where = (ti.c.dag_run_id.in_(chunk), ti.c.task_id.not_in(known_task_ids))
        values = {"updated_at": now, "updated_by": actor}
        conn.execute(
            sa.update(ti)
            .where(*where, ti.c.state.in_(_RESETTABLE), ti.c.state != _S.REMOVED.value)
            .values(state=_S.NONE.value, **values)
        )
        result = conn.execute(
            sa.update(ti)
            .where(*where, ti.c.state == source(_S.NONE, _S.REMOVED).value)
            .values(state=_S.REMOVED.value, end_date=now, **values)
        )
        removed += result.rowcount
    return removed


def fail_unfinished_runs(
    conn: Connection, backfill_id: int, *, now: datetime, idle_only: bool = False
) -> int:
    """End the backfill's queued and running runs as `failed`: it will not drive them.
    `idle_only`: only the runs none of whose TIs is running (a drain lets those end)."""
    stmt = (
        sa.update(run)
        .where(
            run.c.backfill_id == backfill_id,
            run.c.state.in_(_UNFINISHED),
        )
        .values(state=_R.FAILED.value, end_date=now, updated_at=now)
    )
    if idle_only:
        busy = sa.exists().where(ti.c.dag_run_id == run.c.id, ti.c.state == _S.RUNNING.value)
        stmt = stmt.where(~busy)
    return conn.execute(stmt).rowcount


def unfinished_runs(conn: Connection, backfill_id: int) -> int:
    """How many runs of the backfill are still queued or running."""
    stmt = sa.select(sa.func.count()).where(
        run.c.backfill_id == backfill_id, run.c.state.in_(_UNFINISHED)
    )
    return int(conn.execute(stmt).scalar_one())


def unqueue(conn: Connection, backfill_id: int, *, actor: str, now: datetime) -> list[int]:
    """Queued TIs of the backfill back to `scheduled`: their messages now lose the claim."""
    runs = sa.select(run.c.id).where(run.c.backfill_id == backfill_id)
    stmt = (
        sa.update(ti)
        .where(ti.c.state == source(_S.QUEUED, _S.SCHEDULED).value, ti.c.dag_run_id.in_(runs))
        .values(state=_S.SCHEDULED.value, queued_at=None, updated_at=now, updated_by=actor)
        .returning(ti.c.id)
    )
    return [row.id for row in conn.execute(stmt)]


def fail_running(
    conn: Connection, backfill_id: int, *, error: str, actor: str, now: datetime
) -> list[int]:
    """The backfill's running TIs to `failed` with `error` (`cancel --abort`). Clearing the
    claim token fences each try: its worker's next heartbeat matches no row, so it stops
    the callable, and its outcome is refused."""
    runs = sa.select(run.c.id).where(run.c.backfill_id == backfill_id)
    stmt = (
        sa.update(ti)
        .where(ti.c.state == source(_S.RUNNING, _S.FAILED).value, ti.c.dag_run_id.in_(runs))
        .values(
            state=_S.FAILED.value,
            claim_token=None,
            end_date=now,
            next_try_at=None,
            last_error=error,
            updated_at=now,
            updated_by=actor,
        )
        .returning(ti.c.id)
    )
    return [row.id for row in conn.execute(stmt)]


@dataclass(frozen=True, kw_only=True)
class FailedTI:
    dag_id: str
    task_id: str
    run_id: str
    logical_date: datetime
    try_number: int
    state: TIState
    last_error: str | None
    map_index: int = -1


def failed_tis(conn: Connection, backfill_id: int) -> list[FailedTI]:
    """The backfill's failed and upstream_failed TIs, by date then task (one statement)."""
    stmt = (
        sa.select(
            ti.c.dag_id,
            ti.c.task_id,
            run.c.run_id,
            run.c.logical_date,
            ti.c.try_number,
            ti.c.state,
            ti.c.last_error,
            ti.c.map_index,
        )
        .select_from(ti.join(run, ti.c.dag_run_id == run.c.id))
        .where(run.c.backfill_id == backfill_id, ti.c.state.in_([s.value for s in FAILED_STATES]))
        .order_by(run.c.logical_date, ti.c.task_id, ti.c.map_index)
    )
    return [
        FailedTI(
            dag_id=r.dag_id,
            task_id=r.task_id,
            run_id=r.run_id,
            logical_date=r.logical_date,
            try_number=r.try_number,
            state=TIState(r.state),
            last_error=r.last_error,
            map_index=r.map_index,
        )
        for r in conn.execute(stmt)
    ]


def _chunks(items: Sequence[_T]) -> Iterator[list[_T]]:
    for start in range(0, len(items), _CHUNK):
        yield list(items[start : start + _CHUNK])
