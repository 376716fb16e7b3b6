"""What the parity tests observe: database rows, the ledger, and assertions on both.

The database is read with plain SQLAlchemy Core against the schema tables
(the tests check what the product wrote, not what its readers report); the
ledger is the one the task callables append to (tests/support/ledger.py):
one `start` line per callable start, whatever the product believes, with
`time.monotonic()` stamps that compare across processes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from integration.checks import max_overlap
from sqlalchemy.engine import Engine
from support.ledger import Entry, Key, Ledger
from support.stack import utc

from backfill.model.dag import DAG
from backfill.store.schema import backfills, dag_runs, task_instances

__all__ = ["max_load", "max_overlap"]


day = utc  # a logical date of the parity DAGs (daily, UTC midnight)


# --- database ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TI:
    task_id: str
    logical_date: datetime
    state: str
    try_number: int
    last_error: str | None
    start_date: datetime | None
    end_date: datetime | None
    pool: str


def tis(engine: Engine, dag_id: str) -> dict[tuple[str, datetime], TI]:
    """Every TI of `dag_id`, by (task_id, logical_date)."""
    ti, run = task_instances, dag_runs
    stmt = (
        sa.select(
            ti.c.task_id,
            run.c.logical_date,
            ti.c.state,
            ti.c.try_number,
            ti.c.last_error,
            ti.c.start_date,
            ti.c.end_date,
            ti.c.pool,
        )
        .select_from(ti.join(run, ti.c.dag_run_id == run.c.id))
        .where(ti.c.dag_id == dag_id)
    )
    with engine.connect() as conn:
        found = [TI(**row._mapping) for row in conn.execute(stmt)]
    return {(t.task_id, t.logical_date): t for t in found}


def states(engine: Engine, dag_id: str) -> dict[tuple[str, datetime], str]:
    return {key: ti.state for key, ti in tis(engine, dag_id).items()}


def runs(engine: Engine, dag_id: str) -> list[Any]:
    """The DAG runs of `dag_id`, oldest logical date first."""
    stmt = sa.select(dag_runs).where(dag_runs.c.dag_id == dag_id).order_by(dag_runs.c.logical_date)
    with engine.connect() as conn:
        return list(conn.execute(stmt))


def backfill_rows(engine: Engine, dag_id: str) -> list[Any]:
    stmt = sa.select(backfills).where(backfills.c.dag_id == dag_id).order_by(backfills.c.id)
    with engine.connect() as conn:
        return list(conn.execute(stmt))


def db_spans(
    engine: Engine, dag_ids: Iterable[str], task_id: str | None = None
) -> list[tuple[float, float]]:
    """[start_date, end_date) of every finished last try, as the workers wrote them.

    Each try's interval runs from its claim to its outcome, both stamped by
    the worker before its statement: a try queued after another one's
    outcome was committed is claimed after it, so these never overlap more
    than what really ran at once.
    """
    out = []
    for dag_id in set(dag_ids):
        for ti in tis(engine, dag_id).values():
            if task_id in (None, ti.task_id) and ti.start_date and ti.end_date:
                out.append((ti.start_date.timestamp(), ti.end_date.timestamp()))
    return out


# --- ledger ------------------------------------------------------------------------------


def entries(ledger: Ledger, dag_id: str, event: str | None = "start") -> list[Entry]:
    return [e for e in ledger.entries(event) if e.dag_id == dag_id]


def started(ledger: Ledger, dag_id: str) -> list[Key]:
    """Every callable start of `dag_id`, in order (a try that started twice shows twice)."""
    return [e.key for e in entries(ledger, dag_id)]


def spans(ledger: Ledger, dag_ids: Iterable[str]) -> dict[Key, tuple[float, float]]:
    wanted = set(dag_ids)
    return {k: v for k, v in ledger.spans().items() if k[0] in wanted}


def peaks(
    ledger: Ledger, engine: Engine, *dag_ids: str, task_id: str | None = None
) -> tuple[int, int]:
    """(most tries at once per the ledger, most at once per the TI rows).

    The ledger's spans (the callables' own) are inside the rows' spans (claim
    to outcome): a limit must be REACHED by the first and never EXCEEDED by
    the second.
    """
    found = [
        span for key, span in spans(ledger, dag_ids).items() if task_id is None or key[1] == task_id
    ]
    return max_overlap(found), max_overlap(db_spans(engine, dag_ids, task_id))


def max_load(spans: Iterable[tuple[float, float, int]]) -> int:
    """The largest sum of weights of the intervals [start, end) alive at one instant."""
    # At equal times an end sorts before a start: touching is not overlapping.
    events = sorted([(s, 1, w) for s, _, w in spans] + [(e, -1, w) for _, e, w in spans])
    load = peak = 0
    for _, sign, weight in events:
        load += sign * weight
        peak = max(peak, load)
    return peak


def assert_all_ran_once(ledger: Ledger, engine: Engine, dag_id: str, count: int) -> None:
    """`count` TIs of `dag_id`, each succeeded on its first try, its callable started once."""
    found = tis(engine, dag_id)
    assert len(found) == count
    assert {(t.state, t.try_number) for t in found.values()} == {("success", 1)}
    keys = started(ledger, dag_id)
    assert len(keys) == len(set(keys)) == count, f"tries started more than once: {keys}"


def assert_dependency_order(ledger: Ledger, dag: DAG) -> None:
    """No try of a task started before every upstream try of the same date had ended."""
    ended: dict[tuple[str, datetime], float] = {}
    for (_dag_id, task_id, date, _), (_, end) in spans(ledger, [dag.dag_id]).items():
        key = (task_id, date)
        ended[key] = max(end, ended.get(key, end))
    late = []
    for entry in entries(ledger, dag.dag_id):
        for up in dag.tasks[entry.task_id].upstream_ids:
            up_end = ended.get((up, entry.logical_date))
            if up_end is None or up_end > entry.at:
                late.append(f"{entry.task_id}@{entry.logical_date:%Y-%m-%d} before {up}")
    assert not late, f"tries started before their upstreams ended: {late}"


def run_windows(ledger: Ledger, dag_id: str) -> dict[datetime, tuple[float, float]]:
    """Per logical date: first callable start to last callable end (inside the run's life)."""
    times: dict[datetime, list[float]] = defaultdict(list)
    for (_, _, date, _), (begin, end) in spans(ledger, [dag_id]).items():
        times[date] += [begin, end]
    return {date: (min(t), max(t)) for date, t in times.items()}
