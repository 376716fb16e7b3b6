"""The one Celery task: run one TI try, claimed and fenced in the database.

Flow, each step logged with the TI key (`dag/task/date try n`): parse the
message -> claim the try (one conditional UPDATE; a loser acks as a no-op)
-> load the DAG and check its fingerprint -> run the callable with a
heartbeat and its timeout (`workers.execute`) -> write the outcome, fenced on
the claim (a worker that lost its claim discards its outcome) -> only then,
if it was written, run the task's callbacks (`workers.callbacks`). A backfill
created with `--mark-success` still queues, limits and claims each try; the
worker then finishes it `success` without calling the task, and logs so.

Invariants:
- A failure of user code is a state transition, never a Celery retry.
  Anything else is logged at this process edge and the message is acked; the
  coordinator reaps a silent `running` try and re-dispatches a `queued` one
  whose message went nowhere. Celery is told each delivery's verdict only
  after the database was (`workers.verdict`): Flower shows a failed try as
  FAILURE, a no-op delivery as IGNORED, and never retries.
- Engines are created in the process that uses them, on first use: a pool
  inherited through fork would share its connections with the parent.
- Claim, heartbeat and finish are one statement each, run on an autocommit
  engine (`db.create_engine_for`): the server commits each as it completes.
  In a transaction, a worker frozen (SIGSTOP, a paused VM) between its
  statement and its COMMIT would hold the TI's row lock, and the
  coordinator's reap of that very TI would wait on it.
- Each of them survives a dropped connection (`store.reconnect`): claim and
  finish are retried for up to `WORKER_BUDGET` seconds and recognise their
  own landed attempt (the claim by its token, the finish by its journal row,
  hence one `now` for all its attempts); a heartbeat is retried until the
  next one is due, and the heartbeat thread keeps beating through an outage.
- A try's times are on the database's clock (`store.clock`), never this host's
  wall clock: the claim is stamped by the server, and the worker carries that
  instant with its monotonic clock for the heartbeats, the outcome and the
  retry's due time. A worker whose wall clock is off, or jumps, has its live
  tries neither reaped nor spared by the coordinator's cutoff.
  A claim or finish that gives up is logged and its message acked: the
  coordinator re-dispatches the queued try or reaps the silent one.
- DAG files are imported once per worker process: restart workers to deploy
  changed DAG files (until then the fingerprint check refuses their tries).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from celery import Celery, Task

from backfill.config import Settings
from backfill.errors import BadMessage, Unreachable, UserError
from backfill.messages import TASK_NAME, TaskMessage
from backfill.model.context import Context
from backfill.model.dag import DAG
from backfill.model.macros import context_for
from backfill.model.states import TIState
from backfill.model.task import Task as DagTask
from backfill.planning.retry import retry_delay, should_retry
from backfill.planning.run_options import Execution
from backfill.signing import verified
from backfill.store import claims, clock
from backfill.store.schema import RefusalKind
from workers import callbacks, results
from workers.capture import capturing, error_text, try_log_of
from workers.execute import Ending, Result, execute, one_line
from workers.process import PerProcess, Process
from workers.verdict import Report, TryFailed, Verdict, tell_celery

log = logging.getLogger(__name__)


def register(app: Celery, settings: Settings) -> None:
    """Register `backfill.run_task_instance` on `app`, running tries per `settings`."""
    process = PerProcess(settings)

    # acks_late: acked after the try (a crash hands the message back, and the
    # redelivery loses the claim race); no autoretry: retries are TI states.
    @app.task(
        name=TASK_NAME,
        bind=True,
        acks_late=True,
        reject_on_worker_lost=True,
        ignore_result=True,
        throws=(TryFailed,),
    )
    def run_task_instance(self: Task[Any, Any], *args: Any, **kwargs: Any) -> str:
        return tell_celery(self, handle(process, settings, args, kwargs))


def handle(
    process: PerProcess, settings: Settings, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Report:
    """Run the try a message asks for; what Celery should be told. Never raises: this is
    the process edge."""
    try:
        if args:
            raise BadMessage(f"expected keyword arguments only, got {len(args)} positional")
        message = TaskMessage.from_kwargs(verified(kwargs, settings.message_key))
    except BadMessage as exc:
        log.warning("malformed message acked as a no-op: %s", exc)
        return Report(Verdict.NOOP, f"malformed message: {exc}")
    key = message.describe()
    try:
        return _run(process.get(), settings, message, key)
    except Unreachable as exc:
        log.error("%s: %s; the coordinator will re-dispatch or reap the try", key, exc)
        return Report(Verdict.FAILED, f"{key}: not recorded: {exc}")
    except Exception as exc:  # the process edge: anything unexpected is logged with the key
        log.exception("%s: worker error; the coordinator will reap or re-dispatch the try", key)
        return Report(Verdict.FAILED, f"{key}: worker error: {one_line(exc)}")


def _run(proc: Process, settings: Settings, message: TaskMessage, key: str) -> Report:
    hostname, claimant = socket.gethostname(), _claimant()
    token = uuid.uuid4().hex  # one per message: a retried claim recognises it

    def claim_try() -> tuple[claims.Claim | None, float]:
        with proc.engine.connect() as conn:
            sent = time.monotonic()  # the server stamps the claim just after this
            won = claims.claim(
                conn,
                ti_id=message.ti_id,
                try_number=message.try_number,
                token=token,
                claimant=claimant,
                hostname=hostname,
            )  # stamped by the database's clock, handed back as `started_at`
            return won, sent

    claim, sent = proc.db.run(claim_try)
    if claim is None:
        log.info("%s: lost the claim race / stale message; acked as a no-op", key)
        _refused(proc, message.ti_id, message.try_number, RefusalKind.CLAIM, claimant)
        return Report(Verdict.NOOP, f"{key}: lost the claim race or stale; not run")
    log.info("%s: claimed by %s", key, claimant)
    db_clock = clock.Anchored(claim.started_at, sent)  # the try's writes: the database's clock
    outcome = _attempt(proc, settings, claim, db_clock, key)
    ended = db_clock.now()  # one instant for every attempt: a retry finds its landed one by it

    if outcome.result is not None and not results.record(proc, claim, outcome.result, now=ended):
        log.warning("%s: claim lost; result and outcome %s discarded", key, outcome.state)
        _refused(proc, claim.ti_id, claim.try_number, RefusalKind.FINISH, claimant)
        return Report(Verdict.NOOP, f"{key}: claim lost; outcome {outcome.state} discarded")

    def finish_try() -> bool:
        with proc.engine.connect() as conn:
            return claims.finish(
                conn,
                claim,
                outcome.state,
                actor=f"worker:{claimant}",
                now=ended,
                next_try_at=outcome.next_try_at,
                error=outcome.error,
            )

    written = proc.db.run(finish_try)
    if not written:
        log.warning("%s: claim lost; outcome %s discarded", key, outcome.state)
        _refused(proc, claim.ti_id, claim.try_number, RefusalKind.FINISH, claimant)
        return Report(Verdict.NOOP, f"{key}: claim lost; outcome {outcome.state} discarded")
    log.info("%s: %s", key, outcome.state)
    if outcome.task is not None:  # recorded: only now may its callbacks run (fenced)
        task = outcome.task

        def context() -> Context:
            return replace(_context(task.dag, claim), results=results.reader(proc, claim, task.dag))

        callbacks.after_outcome(task, context, outcome.state, error=outcome.error, key=key)
    if outcome.state in (TIState.FAILED, TIState.UP_FOR_RETRY):
        return Report(Verdict.FAILED, f"{key}: {outcome.state}: {outcome.error}")
    return Report(Verdict.DONE, f"{key}: {outcome.state}")


def _refused(proc: Process, ti_id: int, try_number: int, kind: RefusalKind, claimant: str) -> None:
    """Record a refusal for metrics and audits; best effort: the fence already held."""
    try:
        with proc.engine.connect() as conn:
            claims.refuse(conn, ti_id=ti_id, try_number=try_number, kind=kind, claimant=claimant)
    except Exception as exc:
        log.warning("could not record a refused %s of TI %d: %s", kind.value, ti_id, exc)


@dataclass(frozen=True, kw_only=True)
class _Outcome:
    state: TIState
    error: str | None = None
    next_try_at: datetime | None = None
    result: str | None = None  # the return value as JSON, stored before a success
    task: DagTask | None = None  # the task that ran (or was marked success): its callbacks


def _attempt(
    proc: Process, settings: Settings, claim: claims.Claim, db_clock: clock.Anchored, key: str
) -> _Outcome:
    """Check the DAG, run the callable, and decide the try's outcome."""
    try:
        dag = proc.dags.get(claim.dag_id)
    except UserError as exc:
        return _Outcome(state=TIState.FAILED, error=one_line(exc))
    fingerprint = proc.fingerprints[dag.dag_id]
    if fingerprint != claim.dag_fingerprint:
        error = (
            f"DagFingerprintMismatch: this worker's DAG {dag.dag_id!r} has fingerprint "
            f"{fingerprint}, the backfill was planned with {claim.dag_fingerprint}; "
            "deploy the same DAG files to the coordinator and every worker, then restart "
            "the workers"
        )
        log.error("%s: %s", key, error)
        return _Outcome(state=TIState.FAILED, error=error)
    task = dag.tasks.get(claim.task_id)
    if task is None:  # unreachable with equal fingerprints; kept as a clear refusal
        return _Outcome(
            state=TIState.FAILED,
            error=f"TaskNotFound: DAG {dag.dag_id!r} has no task {claim.task_id!r}",
        )
    if claim.execution is Execution.MARK_SUCCESS:
        log.info("%s: --mark-success: marked success without running the task", key)
        return _Outcome(state=TIState.SUCCESS, task=task)
    timeout = task.options.execution_timeout
    with capturing(try_log_of(proc.engine, claim, settings.log_max_bytes)) as try_log:
        result = execute(
            task.run,
            dataclasses.replace(
                _context(dag, claim), results=results.reader(proc, claim, task.dag)
            ),
            timeout=None if timeout is None else timeout.total_seconds(),
            beat=partial(_beat, proc, claim, db_clock),
            interval=settings.heartbeat_interval,
            heartbeat_timeout=settings.heartbeat_timeout,
            label=key,
        )
        if result.error is not None:
            try_log.write("error", error_text(result))
    if result.error is not None:
        log.error("%s: %s", key, result.error, exc_info=result.exception)
    outcome = _outcome(result, dag, claim, db_clock.now(), settings.result_max_bytes)
    return replace(outcome, task=task)


def _outcome(
    result: Result, dag: DAG, claim: claims.Claim, now: datetime, max_bytes: int
) -> _Outcome:
    match result.ending:
        case Ending.RETURNED:
            text, error = results.encoded(result.value, task_id=claim.task_id, max_bytes=max_bytes)
            if error is None:
                return _Outcome(state=TIState.SUCCESS, result=text)
            log.error("%s/%s: %s", claim.dag_id, claim.task_id, error)
            result = dataclasses.replace(result, ending=Ending.RAISED, error=error)
        case Ending.SKIPPED:
            return _Outcome(state=TIState.SKIPPED)
        case Ending.RESCHEDULED:
            delay = timedelta(seconds=result.reschedule_in or 0.0)
            return _Outcome(state=TIState.UP_FOR_RESCHEDULE, next_try_at=now + delay)
    # RAISED, TIMED_OUT, CLAIM_LOST: a failed try (a lost claim's outcome is discarded).
    if not should_retry(try_number=claim.try_number, max_tries=claim.max_tries):
        return _Outcome(state=TIState.FAILED, error=result.error)
    wait = retry_delay(
        dag.tasks[claim.task_id].options,
        try_number=claim.try_number,
        dag_id=claim.dag_id,
        task_id=claim.task_id,
        logical_date=claim.logical_date,
    )
    return _Outcome(state=TIState.UP_FOR_RETRY, error=result.error, next_try_at=now + wait)


def _context(dag: DAG, claim: claims.Claim) -> Context:
    return context_for(
        dag,
        task_id=claim.task_id,
        run_id=claim.run_id,
        logical_date=claim.logical_date,
        data_interval_start=claim.data_interval_start,
        data_interval_end=claim.data_interval_end,
        try_number=claim.try_number,
        map_index=claim.map_index,
        conf=claim.conf,
    )


def _beat(proc: Process, claim: claims.Claim, db_clock: clock.Anchored) -> bool:
    def beat() -> bool:
        with proc.engine.connect() as conn:
            return claims.heartbeat(conn, claim, now=db_clock.now())

    alive = proc.beats.run(beat)
    if not alive:
        _refused(proc, claim.ti_id, claim.try_number, RefusalKind.HEARTBEAT, _claimant())
    return alive


def _claimant() -> str:
    """This process, as claims and the journal name it: `hostname:pid`."""
    return f"{socket.gethostname()}:{os.getpid()}"
