"""Auditing one backfill against the guarantees, from its journals (`backfill audit`). (store)

What is audited is the backfill's own: its row, its runs, the TIs of its runs,
and their journals (`ti_transitions`, `run_transitions`,
`backfill_transitions`). The checks, in the order they are reported:

- `transition`: every journaled (from, to) pair is in its table
  (`journal.JOURNALS`: TRANSITIONS, RUN_TRANSITIONS, BACKFILL_TRANSITIONS);
- `double_claim`: no try was claimed twice; `write_after_lost_claim`: no
  worker wrote for a try once its claim was lost (`audit_tries` defines both,
  per dispatch of a try);
- `not_final`: an ended backfill leaves no TI queued or running. Beyond that,
  one that succeeded leaves every TI of a task it selects finished; one that
  failed leaves it finished or never started (`none`, `scheduled`: a deadlock,
  or a stop on failure, leaves TIs unstarted); one that was cancelled may also
  leave it waiting for a retry or a reschedule that will not come. TIs of
  tasks outside its `--task-regex`, which a reprocessed run keeps as they
  were, are held to the first rule only.

Invariants:
- read only, in the caller's transaction: read it in ONE consistent snapshot
  (`status.reading`), so the journals and the TI states agree;
- bounded at any size: each check is ONE statement doing its work in SQL (the
  pair tables as NOT IN, window functions) and returning violations only,
  streamed `STREAM_BATCH` rows at a time; no journal is read into Python.
  Counting the rows checked is one more statement, reading the backfill's
  task ids (with `--task-regex` only) another.

Hazard: a cancel lets running tries finish, and the tries of a cancelled
backfill are never reaped. Audited while it drains, each try still running is
reported, with its claimant and last heartbeat: audit again once it has ended.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from backfill.model.states import ACTIVE, FINISHED, BackfillState, TIState
from backfill.planning.run_options import RunOptions
from backfill.store.audit_tries import claim_steps, claim_violations
from backfill.store.journal import JOURNALS, Step
from backfill.store.schema import (
    backfill_transitions,
    backfills,
    dag_runs,
    run_transitions,
    task_instances,
    ti_transitions,
)
from backfill.store.status import STREAM_BATCH

bf, run, ti = backfills, dag_runs, task_instances
tj, rj, bj = ti_transitions, run_transitions, backfill_transitions
_S, _B = TIState, BackfillState


class Check(enum.StrEnum):
    """The checks, in the order they are reported."""

    TRANSITION = "transition"
    DOUBLE_CLAIM = "double_claim"
    LOST_CLAIM_WRITE = "write_after_lost_claim"
    NOT_FINAL = "not_final"


# Besides never queued or running: the states an ended backfill may leave a TI of a
# task it selects in (the module docstring says why).
LEFT_IN: dict[BackfillState, frozenset[TIState]] = {
    _B.SUCCESS: FINISHED,
    _B.FAILED: FINISHED | {_S.NONE, _S.SCHEDULED},
    _B.CANCELLED: frozenset(TIState) - ACTIVE,
}


@dataclass(frozen=True, kw_only=True)
class Violation:
    """What one check found wrong with one TI try, run or backfill."""

    check: Check
    journal: str  # the journal of `steps`
    dag_id: str
    task_id: str | None  # None: a run's or the backfill's own journal
    logical_date: datetime | None  # None: the backfill's own journal
    try_number: int | None  # None: not a TI's
    steps: tuple[Step, ...]  # the journal rows that show it, oldest first
    state: TIState | None = None  # not_final: the TI's state, claimant and last heartbeat
    claimant: str | None = None
    heartbeat_at: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class Audited:
    """The backfill audited, and how many journal rows the audit checks."""

    backfill_id: int
    dag_id: str
    state: BackfillState
    options: RunOptions
    transitions: int


def audited(conn: Connection, backfill_id: int) -> Audited | None:
    """The backfill and the size of its journals (two statements); None: no such backfill."""
    stmt = sa.select(bf.c.dag_id, bf.c.state, bf.c.options).where(bf.c.id == backfill_id)
    row = conn.execute(stmt).one_or_none()
    if row is None:
        return None
    return Audited(
        backfill_id=backfill_id,
        dag_id=row.dag_id,
        state=BackfillState(row.state),
        options=RunOptions.from_json(row.options),
        transitions=int(conn.execute(_count(backfill_id)).scalar_one()),
    )


def violations(conn: Connection, audit: Audited) -> Iterator[Violation]:
    """Every violation, check by check in `Check` order, STREAMED: consume it inside
    the caller's transaction."""
    yield from _stream(conn, _illegal(audit.backfill_id), _illegal_violation)
    yield from _stream(conn, claim_violations(_tis_of(audit.backfill_id)), _claim_violation)
    if audit.state in LEFT_IN:
        stmt = _not_final(audit, _unselected(conn, audit))
        yield from _stream(conn, stmt, _not_final_violation)


def _runs_of(backfill_id: int) -> sa.Select[tuple[int]]:
    return sa.select(run.c.id).where(run.c.backfill_id == backfill_id)


def _tis_of(backfill_id: int) -> sa.Select[tuple[int]]:
    return sa.select(ti.c.id).where(ti.c.dag_run_id.in_(_runs_of(backfill_id)))


def _count(backfill_id: int) -> sa.Select[Any]:
    """How many rows the backfill's three journals hold: ONE statement."""
    ti_rows, run_rows, own_rows = (
        sa.select(sa.func.count()).where(where).scalar_subquery()
        for where in (
            tj.c.task_instance_id.in_(_tis_of(backfill_id)),
            rj.c.dag_run_id.in_(_runs_of(backfill_id)),
            bj.c.backfill_id == backfill_id,
        )
    )
    return sa.select(ti_rows + run_rows + own_rows)


def _stream(
    conn: Connection, stmt: sa.Select[Any], make: Callable[[Any], Violation]
) -> Iterator[Violation]:
    for batch in conn.execute(stmt.execution_options(yield_per=STREAM_BATCH)).partitions():
        for row in batch:
            yield make(row)


def _unlisted(journal: sa.Table) -> sa.ColumnElement[bool]:
    """The journal's rows whose (from, to) pair its transition table does not list."""
    pairs = sorted(JOURNALS[journal])
    return sa.tuple_(journal.c.from_state, journal.c.to_state).not_in(pairs)


def _illegal(backfill_id: int) -> sa.Select[Any]:
    """The rows of the backfill's three journals whose pair their table does not list,
    journal by journal (TIs, runs, the backfill), then by row: ONE statement. The TI
    journal's branch comes first: it types the columns the others leave NULL."""
    none = sa.null()
    of_tis = _illegal_in(tj, 0, tj.c.actor, tj.c.try_number, ti.c.dag_id, ti.c.task_id)
    of_runs = _illegal_in(rj, 1, none, none, run.c.dag_id, none)
    of_backfill = _illegal_in(bj, 2, none, none, bf.c.dag_id, none)
    union = sa.union_all(
        of_tis.add_columns(run.c.logical_date)
        .select_from(
            tj.join(ti, ti.c.id == tj.c.task_instance_id).join(run, ti.c.dag_run_id == run.c.id)
        )
        .where(run.c.backfill_id == backfill_id),
        of_runs.add_columns(run.c.logical_date)
        .select_from(rj.join(run, run.c.id == rj.c.dag_run_id))
        .where(run.c.backfill_id == backfill_id),
        of_backfill.add_columns(none)
        .select_from(bj.join(bf, bf.c.id == bj.c.backfill_id))
        .where(bj.c.backfill_id == backfill_id),
    ).subquery("illegal")
    return sa.select(union).order_by(union.c.rank, union.c.id)


def _illegal_in(journal: sa.Table, rank: int, *columns: Any) -> sa.Select[Any]:
    """A branch of `_illegal`: the rows of `journal` with an unlisted pair, and `columns`
    (actor, try number, DAG id, task id), the logical date to add."""
    return sa.select(
        sa.literal(rank).label("rank"),
        sa.literal(journal.name).label("journal"),
        journal.c.id,
        journal.c.from_state,
        journal.c.to_state,
        *columns,
    ).where(_unlisted(journal))


def _illegal_violation(row: Any) -> Violation:
    return Violation(
        check=Check.TRANSITION,
        journal=row.journal,
        dag_id=row.dag_id,
        task_id=row.task_id,
        logical_date=row.logical_date,
        try_number=row.try_number,
        steps=(Step(row.id, row.from_state, row.to_state, row.actor),),
    )


def _claim_violation(row: Any) -> Violation:
    return Violation(
        check=Check.DOUBLE_CLAIM if row.is_claim else Check.LOST_CLAIM_WRITE,
        journal=tj.name,
        dag_id=row.dag_id,
        task_id=row.task_id,
        logical_date=row.logical_date,
        try_number=row.try_number,
        steps=claim_steps(row),
    )


def _unselected(conn: Connection, audit: Audited) -> list[str]:
    """The backfill's task ids its `--task-regex` does not select (in Python: the same
    `re.search` as `run`), over its distinct task ids: as many as the DAG's tasks."""
    if audit.options.task_regex is None:
        return []
    stmt = sa.select(ti.c.task_id).where(ti.c.dag_run_id.in_(_runs_of(audit.backfill_id)))
    task_ids = conn.execute(stmt.distinct()).scalars()
    return sorted(t for t in task_ids if not audit.options.selects(t))


def _values(states: Iterable[TIState]) -> list[str]:
    return sorted(s.value for s in states)


def _not_final(audit: Audited, unselected: list[str]) -> sa.Select[Any]:
    """The TIs the ended backfill may not have left as they are, each with its last
    journal row, by logical date then TI: ONE statement. The last row is looked up for
    those TIs only, then joined by its key."""
    barred = _values(frozenset(TIState) - LEFT_IN[audit.state])
    wrong = sa.or_(
        ti.c.state.in_(_values(ACTIVE)),
        sa.and_(ti.c.task_id.not_in(unselected), ti.c.state.in_(barred)),
    )
    last_id = sa.select(sa.func.max(tj.c.id)).where(tj.c.task_instance_id == ti.c.id)
    found = (
        sa.select(
            ti.c.id,
            ti.c.dag_id,
            ti.c.task_id,
            run.c.logical_date,
            ti.c.try_number,
            ti.c.state,
            ti.c.claimant,
            ti.c.heartbeat_at,
            last_id.scalar_subquery().label("last_id"),
        )
        .select_from(ti.join(run, run.c.id == ti.c.dag_run_id))
        .where(run.c.backfill_id == audit.backfill_id, wrong)
        .subquery("unfinished")
    )
    last = tj.alias("last_step")
    return (
        sa.select(found, last.c.from_state, last.c.to_state, last.c.actor)
        .select_from(found.outerjoin(last, last.c.id == found.c.last_id))
        .order_by(found.c.logical_date, found.c.id)
    )


def _not_final_violation(row: Any) -> Violation:
    steps = (
        () if row.last_id is None else (Step(row.last_id, row.from_state, row.to_state, row.actor),)
    )
    return Violation(
        check=Check.NOT_FINAL,
        journal=tj.name,
        dag_id=row.dag_id,
        task_id=row.task_id,
        logical_date=row.logical_date,
        try_number=row.try_number,
        steps=steps,
        state=TIState(row.state),
        claimant=row.claimant,
        heartbeat_at=row.heartbeat_at,
    )
