"""Run one task callable with a heartbeat, an execution timeout and a way to stop it.

Invariants and hazards:
- The callable runs in the calling thread. In Celery's prefork pool that is
  the main thread of the child process, and the callable is stopped with a
  real signal: SIGALRM, fired by an interval timer (`execution_timeout`) or
  sent by the heartbeat thread when the claim is lost. The handler raises
  `Interrupted` inside the callable, once. Afterwards the timer is cancelled
  and the previous SIGALRM handler restored.
- Hazard: Python runs signal handlers between bytecodes, so a callable stuck
  in C code that never checks for signals (a long loop in an extension, a
  lock acquired without timeout) is stopped only when it returns to Python.
  Blocking system calls (sleep, socket reads) are interrupted. The process
  has one real-time timer: a callable that uses SIGALRM or `setitimer`
  itself conflicts with this, and a timer armed before the run is cancelled.
- Off the main thread (e.g. `celery worker -P threads`) no signal can be
  aimed at the callable: it runs to its end (a warning says so), a timeout is
  detected afterwards, and a lost claim still discards the outcome.
- `Interrupted` derives from BaseException, as KeyboardInterrupt does, so a
  task's `except Exception` cannot swallow it; a task that swallows it anyway
  is still reported as stopped.
- The heartbeat runs in one daemon thread per process (the pacemaker), which
  beats for every try the process runs. Stopping a try's heartbeat does not
  wait for a beat in flight: a late beat is fenced on the claim and changes
  nothing.
- A beat that fails (the database is unreachable) never stops the callable:
  the thread keeps beating, says so once, and logs an error once the try has
  been silent for half the heartbeat timeout, since at the full timeout a
  coordinator that still reaches the database reaps it. Only a beat that
  matches no row (the claim is lost) stops the callable.
"""

from __future__ import annotations

import enum
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

from backfill.model.context import Context, Reschedule, Skip

log = logging.getLogger(__name__)

_Handler = Callable[[int, FrameType | None], Any] | int | None
MAX_ERROR_LENGTH = 2000  # characters of last_error kept for reports


class Ending(enum.Enum):
    RETURNED = "returned"
    SKIPPED = "skipped"
    RESCHEDULED = "rescheduled"
    RAISED = "raised"
    TIMED_OUT = "timed out"
    CLAIM_LOST = "claim lost"


@dataclass(frozen=True, kw_only=True)
class Result:
    """How the callable ended; `error` is one line, `ExcType: message`."""

    ending: Ending
    error: str | None = None
    reschedule_in: float | None = None  # seconds, for RESCHEDULED
    exception: BaseException | None = None  # for the log's traceback
    value: object = None  # what the callable returned, for RETURNED


class Interrupted(BaseException):
    """Raised inside the callable to stop it (timeout or lost claim). Not an error."""

    def __init__(self, result: Result) -> None:
        super().__init__(result.error)
        self.result = result


def one_line(exc: BaseException) -> str:
    """`ExcType: message` on one line, as stored in `last_error`."""
    message = " ".join(str(exc).split())
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return text[:MAX_ERROR_LENGTH]


def execute(
    fn: Callable[[Context], object],
    ctx: Context,
    *,
    timeout: float | None,
    beat: Callable[[], bool],
    interval: float,
    heartbeat_timeout: float,
    label: str = "task",
) -> Result:
    """Run `fn(ctx)`, calling `beat()` every `interval` s; stop it on timeout or lost claim.

    `beat` returns False when the claim is lost. `heartbeat_timeout` is how
    long a silent try lives before it is reaped, for the heartbeat's warnings,
    which name the try by `label`.
    """
    stopper = _Stopper(timeout)
    heart = _Heart(
        beat, interval=interval, timeout=heartbeat_timeout, label=label, on_lost=stopper.stop
    )
    heart.start()
    try:
        if threading.current_thread() is threading.main_thread():
            return _run_interruptible(fn, ctx, stopper)
        log.warning(
            "not in the main thread (a threads/gevent pool?): the task cannot be "
            "interrupted on timeout or lost claim; use the prefork pool"
        )
        started = time.monotonic()
        result = _call(fn, ctx)
        if heart.lost is not None:
            return heart.lost
        if timeout is not None and time.monotonic() - started > timeout:
            return _timed_out(timeout, stopped=False)
        return result
    finally:
        heart.close()


def _call(fn: Callable[[Context], object], ctx: Context) -> Result:
    try:
        value = fn(ctx)
    except Skip:
        return Result(ending=Ending.SKIPPED)
    except Reschedule as exc:
        return Result(ending=Ending.RESCHEDULED, reschedule_in=exc.delay_seconds)
    except Exception as exc:  # user code: any failure is the try's failure
        return Result(ending=Ending.RAISED, error=one_line(exc), exception=exc)
    # SystemExit and KeyboardInterrupt propagate: the process is on its way out
    # (billiard's terminate handler raises SystemExit), and the silent try
    # will be reaped and retried by the coordinator.
    return Result(ending=Ending.RETURNED, value=value)


def _run_interruptible(fn: Callable[[Context], object], ctx: Context, stopper: _Stopper) -> Result:
    result: Result | None = None
    try:
        stopper.arm()  # inside the try: a stop may be signalled as soon as it is armed
        try:
            result = _call(fn, ctx)
        finally:
            stopper.disarm()
    except Interrupted:
        # The signal may land after the callable returned, even inside the
        # `finally` above before it disarmed: hence this outer handler.
        stopper.disarm()
    if stopper.fired is not None:  # also when the callable swallowed Interrupted
        return stopper.fired
    assert result is not None  # only Interrupted skips the assignment, and it sets `fired`
    return result


def _timed_out(timeout: float, *, stopped: bool) -> Result:
    error = f"ExecutionTimeout: the task ran longer than its execution_timeout of {timeout:g}s"
    return Result(ending=Ending.TIMED_OUT, error=error + (" and was stopped" if stopped else ""))


class _Stopper:
    """Raises `Interrupted` once in the main thread: on timeout, or when asked to."""

    def __init__(self, timeout: float | None) -> None:
        self._timeout = timeout
        self._lock = threading.Lock()  # orders stop() against disarm()
        self._armed = False
        self._installed = False
        self._previous: _Handler = None
        self._reason: Result | None = None
        self.fired: Result | None = None

    def arm(self) -> None:
        self._previous = signal.signal(signal.SIGALRM, self._on_alarm)
        self._installed = True
        with self._lock:
            self._armed = True
        if self._timeout is not None:
            signal.setitimer(signal.ITIMER_REAL, self._timeout)

    def stop(self, reason: Result) -> None:
        """Ask the main thread to stop the callable (called from the heartbeat thread)."""
        with self._lock:
            # Under the lock: once disarm() has run, no signal is sent that
            # could reach the restored handler (SIGALRM's default kills).
            if self._armed and self._reason is None:
                self._reason = reason
                main = threading.main_thread().ident
                assert main is not None
                signal.pthread_kill(main, signal.SIGALRM)

    def _on_alarm(self, _signum: int, _frame: FrameType | None) -> None:
        # Runs in the main thread between bytecodes; takes no lock, since the
        # main thread may hold it (in disarm) when the handler runs.
        if not self._armed:
            return  # a late or second signal: the callable is already over
        self._armed = False
        self.fired = self._reason or _timed_out(self._timeout or 0.0, stopped=True)
        raise Interrupted(self.fired)

    def disarm(self) -> None:
        """Idempotent: no more signals; cancel the timer; restore the previous handler."""
        with self._lock:
            self._armed = False
        if not self._installed:
            return
        self._installed = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        # A handler installed from C reads as None and cannot be set back from
        # Python: the default action is the closest equivalent.
        previous = signal.SIG_DFL if self._previous is None else self._previous
        signal.signal(signal.SIGALRM, previous)


class _Heart:
    """The heartbeat of one try: `pulse` calls `beat`; the process's pacemaker calls
    `pulse` every `interval` seconds until closed or the claim is lost."""

    def __init__(
        self,
        beat: Callable[[], bool],
        *,
        interval: float,
        timeout: float,
        label: str,
        on_lost: Callable[[Result], None],
    ) -> None:
        self._beat, self.interval, self._timeout = beat, interval, timeout
        self._label, self._on_lost = label, on_lost
        self.due = time.monotonic() + interval
        self._last_ok = time.monotonic()
        self._failing = self._alarmed = False
        self.lost: Result | None = None

    def start(self) -> None:
        _pacemaker().add(self)

    def close(self) -> None:
        """No more beats; one already in flight may still land (it is fenced)."""
        _pacemaker().remove(self)

    def pulse(self) -> bool:
        """One beat; False once the claim is lost (no more beats then)."""
        try:
            alive = self._beat()
        except Exception as exc:  # thread edge: an outage must not end the heartbeat
            silent = time.monotonic() - self._last_ok
            if not self._failing:
                log.warning("%s: heartbeat failed, retrying: %s", self._label, exc)
            if not self._alarmed and silent >= self._timeout / 2:
                log.error(
                    "%s: no heartbeat written for %.1fs; a coordinator reaps the try once "
                    "it is silent for %gs",
                    self._label,
                    silent,
                    self._timeout,
                )
                self._alarmed = True
            self._failing = True
            return True
        if not alive:
            self._lose("the heartbeat matched no row: the try was reaped, cleared or cancelled")
            return False
        if self._failing:
            silent = time.monotonic() - self._last_ok
            log.warning("%s: heartbeat written again after %.1fs", self._label, silent)
        self._last_ok, self._failing, self._alarmed = time.monotonic(), False, False
        return True

    def _lose(self, why: str) -> None:
        self.lost = Result(ending=Ending.CLAIM_LOST, error=f"ClaimLost: {why}")
        self._on_lost(self.lost)


class _Pacemaker(threading.Thread):
    """One daemon thread per process beating for every try it runs: starting a
    thread per try cost a worker about a tenth of its time on short tasks."""

    def __init__(self) -> None:
        super().__init__(name="backfill-heartbeat", daemon=True)
        self._changed = threading.Condition()
        self._hearts: set[_Heart] = set()

    def add(self, heart: _Heart) -> None:
        with self._changed:
            self._hearts.add(heart)
            self._changed.notify()

    def remove(self, heart: _Heart) -> None:
        with self._changed:
            self._hearts.discard(heart)

    def run(self) -> None:
        while True:
            for heart in self._due():  # beats go outside the lock: they take a round trip
                if not heart.pulse():
                    self.remove(heart)

    def _due(self) -> list[_Heart]:
        """Wait until some heart is due; those due, each rescheduled one interval on."""
        with self._changed:
            while True:
                now = time.monotonic()
                due = [h for h in self._hearts if h.due <= now]
                if due:
                    for heart in due:
                        heart.due = now + heart.interval
                    return due
                soonest = min((h.due for h in self._hearts), default=None)
                self._changed.wait(None if soonest is None else soonest - now)


_PACEMAKERS: dict[int, _Pacemaker] = {}  # by pid: a forked child starts its own thread
_PACEMAKERS_LOCK = threading.Lock()


def _pacemaker() -> _Pacemaker:
    with _PACEMAKERS_LOCK:
        current = _PACEMAKERS.get(os.getpid())
        if current is None:
            current = _PACEMAKERS[os.getpid()] = _Pacemaker()
            current.start()
        return current
