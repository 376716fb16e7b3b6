"""Worker-side statements: claim a try, heartbeat it, write its outcome. (store)

The claim is the double-run fix (DESIGN 1.2): ONE conditional UPDATE from
`queued` at the message's try number sets a fresh claim token; of any number
of concurrent claimants exactly one gets a row back. Every later write of the
try is fenced on (id, state='running', try_number, claim_token): a worker
whose claim was taken away (reaped, cleared, cancelled) matches no row.
Both the claim and the finish may be retried after a lost reply (the commit
landed, the connection dropped before the answer; `store.reconnect`): each
recognises its own earlier success instead of reporting a lost claim.
The claim also tells the worker how the backfill executes its TIs
(`--mark-success`: finish the try `success` without running the task).
Times are the database's (`store.clock`): a claim stamps itself with the
server's clock and hands the instant back (`Claim.started_at`), which the
worker carries for the try's later writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from backfill.model.states import TRANSITIONS, TRY_OUTCOMES, TIState, source
from backfill.planning.run_options import Execution
from backfill.store import clock
from backfill.store.schema import (
    RefusalKind,
    backfills,
    dag_runs,
    refused_writes,
    task_instances,
    ti_transitions,
)

ti, run, bf, journal = task_instances, dag_runs, backfills, ti_transitions
_S = TIState


@dataclass(frozen=True, kw_only=True)
class Claim:
    """A won try, with everything the worker needs to build the task's Context."""

    ti_id: int
    try_number: int
    max_tries: int
    token: str
    dag_id: str
    task_id: str
    map_index: int  # -1: not a mapped task's TI
    run_id: str
    logical_date: datetime
    data_interval_start: datetime
    data_interval_end: datetime
    conf: dict[str, Any]
    dag_fingerprint: str
    started_at: datetime  # the claim's stamp, on the database's clock
    execution: Execution = Execution.RUN  # the backfill's; MARK_SUCCESS: never run the task


def claim(
    conn: Connection,
    *,
    ti_id: int,
    try_number: int,
    token: str,
    claimant: str,
    hostname: str,
    now: datetime | None = None,
) -> Claim | None:
    """Win try `try_number` of TI `ti_id`, or None if it is not queued for that try.
    Stamped `now`, by default the database's clock (`store.clock`).

    The conditional UPDATE decides the race. It also matches the try when it
    is already running under `token`: a retry after a lost reply recognises
    its own claim (tokens are unique per claim attempt, so no other claimant
    can match). On PostgreSQL the won try's run
    and backfill are read in the same statement (the UPDATE in a CTE); SQLite
    has no data-modifying CTEs, so there they are read by a second statement.
    """
    params = {
        "p_ti": ti_id,
        "p_try": try_number,
        "p_token": token,
        "p_claimant": claimant,
        "p_host": hostname,
        "p_now": clock.here(conn, now),
        "p_actor": f"worker:{claimant}",
    }
    if conn.dialect.name == "postgresql":
        row = conn.execute(_CLAIM_AND_READ, params).one_or_none()
    else:
        row = None
        if conn.execute(_CLAIM.returning(ti.c.id), params).one_or_none() is not None:
            row = conn.execute(_READ_CLAIMED, params).one()
    if row is None:
        return None
    return Claim(
        ti_id=ti_id,
        try_number=try_number,
        max_tries=row.max_tries,
        token=token,
        dag_id=row.dag_id,
        task_id=row.task_id,
        map_index=row.map_index,
        run_id=row.run_id,
        logical_date=row.logical_date,
        data_interval_start=row.data_interval_start,
        data_interval_end=row.data_interval_end,
        conf=row.conf,
        dag_fingerprint=row.dag_fingerprint,
        started_at=row.start_date,
        execution=_execution(row.options),
    )


_CLAIMED = (ti.c.max_tries, ti.c.task_id, ti.c.map_index, ti.c.dag_run_id, ti.c.start_date)


def _context(claimed: sa.FromClause) -> sa.Select[Any]:
    """What the worker needs of the claimed TI (`claimed`: its `_CLAIMED` columns),
    its run and its backfill."""
    return sa.select(
        claimed.c.max_tries,
        claimed.c.start_date,
        run.c.dag_id,
        claimed.c.task_id,
        claimed.c.map_index,
        run.c.run_id,
        run.c.logical_date,
        run.c.data_interval_start,
        run.c.data_interval_end,
        run.c.conf,
        bf.c.dag_fingerprint,
        bf.c.options,
    ).select_from(
        claimed.join(run, run.c.id == claimed.c.dag_run_id).join(bf, bf.c.id == run.c.backfill_id)
    )


# The statements of a try are built once, with bound parameters: building them per
# call cost a worker more than the database round trip (SQLAlchemy's construction
# and cache keys, ~1.5 ms per claim).
_P = sa.bindparam  # parameters are named p_*: a column's own name is reserved in SET
_NOW = ti.c.updated_at.type  # UTCDateTime: SQLite keeps no offset
# The caller's time if given, else the server's (`clock.here` gives SQLite's callers one).
_STAMP = sa.func.coalesce(_P("p_now", type_=_NOW), clock.ServerNow())
_CLAIM = (
    sa.update(ti)
    .where(
        ti.c.id == _P("p_ti"),
        ti.c.try_number == _P("p_try"),
        sa.or_(
            ti.c.state == source(_S.QUEUED, _S.RUNNING).value,
            # not a transition: a retried claim recognising its own (see `claim`)
            sa.and_(ti.c.state == _S.RUNNING.value, ti.c.claim_token == _P("p_token")),
        ),
    )
    .values(
        state=_S.RUNNING.value,
        claim_token=_P("p_token"),
        claimant=_P("p_claimant"),
        hostname=_P("p_host"),
        start_date=_STAMP,
        end_date=None,
        heartbeat_at=_STAMP,
        updated_at=_STAMP,
        updated_by=_P("p_actor"),
    )
)
_CLAIM_AND_READ = _context(_CLAIM.returning(*_CLAIMED).cte("claimed"))
_READ_CLAIMED = _context(sa.select(*_CLAIMED).where(ti.c.id == _P("p_ti")).subquery("claimed"))


def _execution(options: dict[str, Any] | None) -> Execution:
    # Stored by `RunOptions.as_json`; a backfill stored before the field existed runs its TIs.
    return Execution((options or {}).get("execution", Execution.RUN.value))


# Every later write of a try matches only its own claim.
_FENCED = sa.and_(
    ti.c.id == _P("p_ti"),
    ti.c.state == _S.RUNNING.value,
    ti.c.try_number == _P("p_try"),
    ti.c.claim_token == _P("p_token"),
)
_HEARTBEAT = sa.update(ti).where(_FENCED).values(heartbeat_at=_P("p_now", type_=_NOW))
_FINISH = (
    sa.update(ti)
    .where(_FENCED)
    .values(
        state=_P("p_outcome"),
        end_date=_P("p_now", type_=_NOW),
        next_try_at=_P("p_next", type_=_NOW),
        last_error=_P("p_error", type_=ti.c.last_error.type),
        updated_at=_P("p_now", type_=_NOW),
        updated_by=_P("p_actor"),
    )
)


def _fenced(claim: Claim) -> dict[str, Any]:
    """The parameters of `_FENCED` for `claim`."""
    return {"p_ti": claim.ti_id, "p_try": claim.try_number, "p_token": claim.token}


def heartbeat(conn: Connection, claim: Claim, *, now: datetime) -> bool:
    """Record that the try is alive; False: the claim is lost, stop the task."""
    return conn.execute(_HEARTBEAT, {**_fenced(claim), "p_now": now}).rowcount == 1


def finish(
    conn: Connection,
    claim: Claim,
    outcome: TIState,
    *,
    actor: str,
    now: datetime,
    next_try_at: datetime | None = None,
    error: str | None = None,
) -> bool:
    """Write the try's outcome; False: the claim was lost and the outcome is discarded.

    A miss is told from an earlier attempt of this very call that landed
    (its reply lost) by the journal: that attempt wrote the try's transition
    out of `running` to `outcome`, by `actor`, at `now`. So a caller that
    retries must pass the same `now` to every attempt.
    """
    if outcome not in TRY_OUTCOMES or outcome not in TRANSITIONS[_S.RUNNING]:
        raise ValueError(f"{outcome} is not an outcome of a try")
    params = {
        **_fenced(claim),
        "p_outcome": outcome.value,
        "p_now": now,
        "p_next": next_try_at,
        "p_error": error,
        "p_actor": actor,
    }
    return conn.execute(_FINISH, params).rowcount == 1 or _landed(
        conn, claim, outcome, actor=actor, at=now
    )


def _landed(conn: Connection, claim: Claim, outcome: TIState, *, actor: str, at: datetime) -> bool:
    """Whether the journal holds this finish: the try left `running` for `outcome`, by
    `actor`, at `at`. Append-only, so the answer cannot change once it is yes."""
    stmt = sa.select(
        sa.exists().where(
            journal.c.task_instance_id == claim.ti_id,
            journal.c.try_number == claim.try_number,
            journal.c.from_state == _S.RUNNING.value,
            journal.c.to_state == outcome.value,
            journal.c.actor == actor,
            journal.c.at == at,
        )
    )
    return bool(conn.execute(stmt).scalar())


_REFUSE = sa.insert(refused_writes).from_select(
    ["task_instance_id", "try_number", "kind", "claimant", "at"],
    sa.select(_P("p_ti"), _P("p_try"), _P("p_kind"), _P("p_claimant"), _STAMP).where(
        sa.exists().where(ti.c.id == _P("p_ti"))
    ),
)


def refuse(
    conn: Connection,
    *,
    ti_id: int,
    try_number: int,
    kind: RefusalKind,
    claimant: str,
    now: datetime | None = None,
) -> None:
    """Record that the fence refused `claimant` (metrics and audits read these), at `now`,
    by default the database's clock. A message naming no TI (a forged or cleaned-up one)
    records nothing."""
    params = {"p_ti": ti_id, "p_try": try_number, "p_kind": kind.value, "p_claimant": claimant}
    conn.execute(_REFUSE, {**params, "p_now": clock.here(conn, now)})
