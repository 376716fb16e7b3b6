"""FAST-FORWARD of the scale backfill to a late state, by SQL (PostgreSQL): bench-only.

Running 439,200 no-op TIs to reach the end of the scale backfill would take
hours, so (e) measures its late window after writing, in one transaction,
what a real history would have left behind:
- every run but the last `keep` (by logical date) ends `success`, and each
  of its TIs that is not `success` yet becomes `success` on try 1, with
  start and end dates, a hostname and a heartbeat;
- each such TI gets the journal rows the real ones of this backfill have
  (`History`: read from the TIs that really ran, e.g. none -> scheduled ->
  queued -> running -> success), from the state it is in, with the actor
  `bench:fast-forward` so that no one mistakes them for the engine's;
- the journal trigger is off for that transaction (`session_replication_role
  = replica`, a superuser setting): it would write one none -> success row
  per TI and NOTIFY nobody needs; the history above is written instead;
- then VACUUM ANALYZE, as autovacuum would have done over the hours a real
  history takes: the late window measures a grown database, not the dead
  rows of one bulk UPDATE.
The bench's coordinator must be stopped while it runs. Nothing of the
product's code is involved: these statements exist only here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from benchmarks import queries

ACTOR = "bench:fast-forward"
HOSTNAME = "bench-fast-forward"

_CUTOFF = sa.text(
    """
    SELECT logical_date FROM dag_runs WHERE backfill_id = :backfill_id
    ORDER BY logical_date DESC OFFSET :keep LIMIT 1
    """
)
# One row per (TI, step of the history at or after the TI's state); :steps, :froms,
# :tos are the history's arrays, :ranks its states' positions (the CASE below).
_JOURNAL = """
    INSERT INTO ti_transitions (task_instance_id, from_state, to_state, try_number, actor, at)
    SELECT ti.id, h.from_state, h.to_state, 1, :actor, :at + h.step * interval '1 millisecond'
    FROM task_instances ti
    JOIN dag_runs r ON r.id = ti.dag_run_id
    JOIN unnest(CAST(:steps AS int[]), CAST(:froms AS text[]), CAST(:tos AS text[]))
        AS h(step, from_state, to_state) ON h.step >= ({rank})
    WHERE r.backfill_id = :backfill_id AND r.logical_date <= :cutoff
      AND ti.state = ANY(CAST(:froms AS text[]))
"""
_TIS = sa.text(
    """
    UPDATE task_instances ti
    SET state = 'success', try_number = GREATEST(ti.try_number, 1), queued_at = :at,
        start_date = :at, end_date = :at + interval '5 milliseconds', heartbeat_at = :at,
        hostname = :hostname, claimant = :hostname, updated_at = :at, updated_by = :actor
    FROM dag_runs r
    WHERE r.id = ti.dag_run_id AND r.backfill_id = :backfill_id
      AND r.logical_date <= :cutoff AND ti.state <> 'success'
    """
)
_RUNS = sa.text(
    """
    UPDATE dag_runs SET state = 'success', start_date = COALESCE(start_date, :at),
        end_date = :at, updated_at = :at
    WHERE backfill_id = :backfill_id AND logical_date <= :cutoff AND state <> 'success'
    """
)


@dataclass(frozen=True)
class History:
    """The journal of one TI that ran: its transitions in order, from `none`."""

    steps: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, conn: Connection, backfill_id: int) -> History:
        """The transitions that (nearly) every successful TI of the backfill has."""
        found = queries.journal_per_ti(conn, backfill_id)
        if not found:
            raise RuntimeError(f"backfill {backfill_id} has no successful TI to copy a history of")
        common = {(a, b) for a, b, n in found if n >= 0.9 * found[0][2]}
        steps, state = [], "none"
        while (nxt := next((b for a, b in common if a == state), None)) is not None:
            steps.append((state, nxt))
            state = nxt
        if state != "success":
            raise RuntimeError(f"no journal path none -> success in {sorted(common)}")
        return cls(tuple(steps))

    def rank_sql(self) -> str:
        """SQL: the first step a TI in `ti.state` still has to take."""
        whens = " ".join(f"WHEN '{a}' THEN {i}" for i, (a, _) in enumerate(self.steps))
        return f"CASE ti.state {whens} END"


def fast_forward(engine: Engine, backfill_id: int, *, keep: int, at: datetime) -> dict[str, object]:
    """Fast-forward all but the last `keep` runs (module doc); what it wrote and took."""
    began = time.perf_counter()
    with engine.begin() as conn:
        history = History.of(conn, backfill_id)
        cutoff = conn.execute(_CUTOFF, {"backfill_id": backfill_id, "keep": keep}).scalar()
        if cutoff is None:
            raise RuntimeError(f"backfill {backfill_id} has no more than {keep} runs")
        conn.execute(sa.text("SET LOCAL session_replication_role = replica"))
        params = {"backfill_id": backfill_id, "cutoff": cutoff, "at": at, "actor": ACTOR}
        froms, tos = zip(*history.steps, strict=True)
        journal = conn.execute(
            sa.text(_JOURNAL.format(rank=history.rank_sql())),
            {**params, "steps": list(range(len(froms))), "froms": list(froms), "tos": list(tos)},
        ).rowcount
        tis = conn.execute(_TIS, {**params, "hostname": HOSTNAME}).rowcount
        runs = conn.execute(_RUNS, params).rowcount
    written = time.perf_counter()
    vacuum(engine)
    return {
        "history": [f"{a}->{b}" for a, b in history.steps],
        "cutoff": cutoff.isoformat(),
        "runs": runs,
        "task_instances": tis,
        "journal_rows": journal,
        "seconds": written - began,
        "vacuum_seconds": time.perf_counter() - written,
    }


def vacuum(engine: Engine) -> None:
    """VACUUM ANALYZE the tables the fast-forward wrote (outside a transaction)."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in ("task_instances", "dag_runs", "ti_transitions"):
            conn.execute(sa.text(f"VACUUM ANALYZE {table}"))
