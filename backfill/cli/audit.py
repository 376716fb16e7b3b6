"""`backfill audit ID`: a backfill's journals checked against the guarantees (DESIGN 6).

Invariants:
- read only, from ONE consistent snapshot (`store.status.reading`); the
  embedded database is never created here: without one, no backfill exists;
- bounded at any backfill size: the checks run in SQL (`store.audit`) and
  return violations only; each is written as it is read, one line (or one
  JSON array element) each, so memory stays flat however many there are;
- exit 0: `N transitions checked, 0 violations`; 1: every violation listed,
  then the same count; 2: no such backfill (nothing read);
- each violation names its check, what it concerns (the TI try as Flower
  shows it, `dag/task/date try n`; or the run, or the backfill) and the
  journal rows that show it, with their ids and actors.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from typing import Any

import click

from backfill.cli.output import BACKFILL_ID, OutputFormat, emit_json_array, iso, output_option
from backfill.config import Settings
from backfill.model.states import ACTIVE, BackfillState, TIState
from backfill.store import audit, status
from backfill.store.audit import Audited, Check, Violation
from backfill.store.errors import BackfillNotFound
from backfill.store.journal import Step

# The transition table each journal is checked against (`backfill.model.states`).
_TABLE_OF = {
    "ti_transitions": "TRANSITIONS",
    "run_transitions": "RUN_TRANSITIONS",
    "backfill_transitions": "BACKFILL_TRANSITIONS",
}
# Why an ended backfill may not leave a TI of a task it selects in its state.
_WHY_NOT = {
    BackfillState.SUCCESS: "every TI of a backfill that succeeded must have finished",
    BackfillState.FAILED: "a TI of a failed backfill must have finished or never started",
}


@click.command("audit")
@click.argument("backfill_id", metavar="ID", type=BACKFILL_ID)
@output_option
def audit_command(backfill_id: int, output: OutputFormat) -> int:
    """Check backfill ID's journals against the guarantees; exit 1 listing each violation.

    Every transition is in its state table; no try was claimed twice; no worker
    wrote for a try after its claim was lost; an ended backfill left no TI queued
    or running, and one that succeeded none unfinished (a failed one may leave
    TIs never started; a cancelled one, TIs never started or waiting for a retry).
    Audit a cancelled backfill once its running tries have ended: until then each
    is reported."""
    with status.reading(Settings.from_env()) as conn:
        found = None if conn is None else audit.audited(conn, backfill_id)
        if conn is None or found is None:
            raise BackfillNotFound(backfill_id)
        counted = _Counted(audit.violations(conn, found))
        if output is OutputFormat.JSON:
            _write_json(found, counted)
        else:
            for violation in counted:
                click.echo(line(violation, found))
            click.echo(summary(found.transitions, counted.seen))
    return 1 if counted.seen else 0


class _Counted(Iterable[Violation]):
    """The violations, counted as they are consumed."""

    def __init__(self, violations: Iterator[Violation]) -> None:
        self._violations = violations
        self.seen = 0

    def __iter__(self) -> Iterator[Violation]:
        for violation in self._violations:
            self.seen += 1
            yield violation


def summary(transitions: int, violations: int) -> str:
    return f"{_count(transitions, 'transition')} checked, {_count(violations, 'violation')}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def line(v: Violation, found: Audited) -> str:
    """`check: subject: detail`, where the subject is the TI try as Flower and the logs
    show it (`dag/task/date try n`), or the run, or the backfill."""
    if v.task_id is not None:
        subject = f"{v.dag_id}/{v.task_id}/{iso(v.logical_date)} try {v.try_number}"
    elif v.logical_date is not None:
        subject = f"run {v.dag_id}/{iso(v.logical_date)}"
    else:
        subject = f"backfill {found.backfill_id} of {v.dag_id}"
    return f"{v.check}: {subject}: {detail(v, found)}"


def _step(step: Step, journal: str | None = None) -> str:
    """A journal row: `a -> b (#id by actor)`, naming the journal when given."""
    where = f"{journal} #{step.id}" if journal else f"#{step.id}"
    by = f" by {step.actor}" if step.actor else ""
    return f"{step.from_state} -> {step.to_state} ({where}{by})"


def detail(v: Violation, found: Audited) -> str:
    """What happened, with the journal rows (ids and actors) that show it."""
    match v.check:
        case Check.TRANSITION:
            (step,) = v.steps
            return f"{_step(step, v.journal)} is not in {_TABLE_OF[v.journal]}"
        case Check.DOUBLE_CLAIM:
            claim, again = v.steps
            return f"claimed again: {_step(again, v.journal)}; the claim: {_step(claim)}"
        case Check.LOST_CLAIM_WRITE:
            return _lost_claim(v)
        case Check.NOT_FINAL:
            return _not_final(v, found.state)


def _lost_claim(v: Violation) -> str:
    claim, *left, wrote = v.steps
    if left:
        said = f"{wrote.actor} wrote {_step(wrote, v.journal)} after the try had left running: "
        said += _step(left[0])
    else:  # the row that took the try out of running is another worker's
        said = f"{wrote.actor} ended a try it had not claimed: {_step(wrote, v.journal)}"
    return f"{said}; the claim: {_step(claim)}"


def _not_final(v: Violation, ended: BackfillState) -> str:
    state = v.state
    assert state is not None  # a not_final violation always names the TI's state
    if state in ACTIVE:
        said = f"still {state} in a {ended} backfill: nothing of an ended backfill is left {state}"
    else:
        said = f"{state} in a {ended} backfill: {_WHY_NOT[ended]}"
    if state is TIState.RUNNING:
        said += f" (claimed by {v.claimant}, last heartbeat {iso(v.heartbeat_at)})"
    return said + "".join(f"; last journal row {_step(s)}" for s in v.steps)


def violation_json(v: Violation, found: Audited) -> dict[str, Any]:
    extra = (
        {}
        if v.state is None
        else {"state": v.state.value, "claimant": v.claimant, "heartbeat_at": iso(v.heartbeat_at)}
    )
    return {
        "check": v.check.value,
        "dag_id": v.dag_id,
        "task_id": v.task_id,
        "logical_date": iso(v.logical_date),
        "try_number": v.try_number,
        "detail": detail(v, found),
        "journal": v.journal,
        "steps": [
            {"id": s.id, "from_state": s.from_state, "to_state": s.to_state, "actor": s.actor}
            for s in v.steps
        ],
        **extra,
    }


def _write_json(found: Audited, violations: Iterable[Violation]) -> None:
    """`{"backfill_id", "transitions_checked", "violations": [...]}`, the array streamed."""
    sys.stdout.write(
        f'{{"backfill_id": {found.backfill_id}, '
        f'"transitions_checked": {found.transitions}, "violations": '
    )
    emit_json_array(json.dumps(violation_json(v, found), ensure_ascii=False) for v in violations)
    sys.stdout.write("}\n")
