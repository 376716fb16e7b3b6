"""Capture what a try's callable prints and logs into the try's log (DESIGN section 6).

Invariants:
- while a try runs, what its thread writes to `sys.stdout` / `sys.stderr` and
  the `logging` records emitted on its thread go to its log, each line
  stamped with the UTC time and its stream (`stdout`, `stderr`, or the record's
  level and logger); routing is per thread, so a threads pool running several
  tries at once keeps them apart, and output of other threads is untouched
  (threads the callable starts itself print to the worker's own log);
- the log is stored in chunks: a per-process flusher thread writes each
  running try's new output every `FLUSH_INTERVAL` seconds, and the try's end
  writes the rest; never one row per line, and a try that prints nothing
  writes nothing;
- at most `max_bytes` of a try's log are kept: its tail. Older chunks are
  trimmed, output not yet stored is cut from its head, and offsets
  (`start_byte`) run on over what was cut, so a reader can say how much;
- a failed write never fails the try: its text stays buffered (still capped)
  for the next flush, and a warning is logged once per try.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, TextIO

import pendulum

from backfill.store import logs
from workers.execute import Result

if TYPE_CHECKING:  # annotations only: SQL stays in backfill.store
    from sqlalchemy.engine import Engine

    from backfill.store.claims import Claim

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 1.0  # seconds between two flushes of a running try's output
WriteChunk = Callable[[int, str, datetime], None]  # (start_byte, text, at)
Trim = Callable[[int], None]  # delete the chunks starting before this byte


class TryLog:
    """The log of one try: buffered text, the stored chunks' offsets, and the cap."""

    def __init__(self, write_chunk: WriteChunk, trim: Trim, *, max_bytes: int) -> None:
        self._write_chunk, self._trim, self._max = write_chunk, trim, max_bytes
        self._lock = threading.Lock()  # the buffer: written by the try, taken by flushes
        self._flushing = threading.Lock()  # one flush at a time, in offset order
        self._pending: list[str] = []
        self._pending_bytes = 0
        self._next_byte = 0  # the whole log's offset of the first pending byte
        self._kept: deque[tuple[int, int]] = deque()  # stored chunks: (start_byte, size)
        self._kept_bytes = 0
        self._open_stream: str | None = None  # the stream whose line is still open
        self._warned = False

    def write(self, stream: str, text: str) -> None:
        """Append `text` from `stream`, stamping each line it starts."""
        if not text:
            return
        with self._lock:
            for piece in text.splitlines(keepends=True):
                if self._open_stream != stream:
                    if self._open_stream is not None:
                        self._add("\n")  # another stream's line was left open
                    self._add(f"{_stamp()} [{stream}] ")
                self._add(piece)
                self._open_stream = None if piece.endswith("\n") else stream
            self._cap_pending()

    def _add(self, text: str) -> None:
        self._pending.append(text)
        self._pending_bytes += len(text.encode())

    def _cap_pending(self) -> None:
        """Keep the last `max_bytes` of the buffer (the stored chunks go at the next flush)."""
        if self._pending_bytes <= self._max:
            return
        data = "".join(self._pending).encode()
        tail = data[-self._max :].decode(errors="ignore")
        _, newline, rest = tail.partition("\n")
        tail = rest if newline and rest else tail  # start at a whole line when there is one
        kept = len(tail.encode())
        self._next_byte += len(data) - kept
        self._pending, self._pending_bytes = [tail], kept

    def flush(self) -> None:
        """Store the buffered text as one chunk, then trim the log to its cap."""
        with self._flushing:
            with self._lock:
                text, start = "".join(self._pending), self._next_byte
                size = self._pending_bytes
                self._pending, self._pending_bytes = [], 0
                self._next_byte += size
            if not text:
                return
            try:
                self._write_chunk(start, text, pendulum.now("UTC"))
            except Exception as exc:  # the log must never fail the try
                self._restore(text, start, size, exc)
                return
            self._kept.append((start, size))
            self._kept_bytes += size
            self._trim_kept()

    def _restore(self, text: str, start: int, size: int, exc: Exception) -> None:
        with self._lock:
            self._pending.insert(0, text)
            self._pending_bytes += size
            self._next_byte = start
            self._cap_pending()
        if not self._warned:
            self._warned = True
            log.warning("could not store a chunk of a try's log (kept to retry): %s", exc)

    def _trim_kept(self) -> None:
        cut = False
        while self._kept_bytes > self._max and len(self._kept) > 1:
            self._kept_bytes -= self._kept.popleft()[1]
            cut = True
        if cut:
            try:
                self._trim(self._kept[0][0])
            except Exception as exc:  # trimmed again at the next flush's cut
                log.warning("could not trim a try's log: %s", exc)


def _stamp() -> str:
    return pendulum.now("UTC").format("YYYY-MM-DDTHH:mm:ss.SSS") + "Z"


class _Routes:
    """The try log of each thread running a try, and the process's flusher thread."""

    def __init__(self) -> None:
        self.local = threading.local()
        self.lock = threading.Lock()
        self.running: set[TryLog] = set()
        self.flusher_pid = 0  # the flusher thread does not survive a fork

    def current(self) -> TryLog | None:
        return getattr(self.local, "log", None)

    def ensure_flusher(self) -> None:
        with self.lock:
            if self.flusher_pid == os.getpid():
                return
            self.flusher_pid = os.getpid()
        threading.Thread(target=self._flush_forever, name="try-log-flusher", daemon=True).start()

    def _flush_forever(self) -> None:
        while True:
            time.sleep(FLUSH_INTERVAL)
            with self.lock:
                running = list(self.running)
            for try_log in running:
                try_log.flush()


_routes = _Routes()


class _Stream(io.TextIOBase):
    """Stands in for sys.stdout / sys.stderr: a thread running a try writes to its
    log, any other thread to the stream it replaced."""

    def __init__(self, name: str, fallback: TextIO) -> None:
        self.name_ = name
        self.fallback = fallback

    def write(self, s: str) -> int:
        current = _routes.current()
        if current is None:
            return self.fallback.write(s)
        current.write(self.name_, s)
        return len(s)

    def flush(self) -> None:
        if _routes.current() is None:
            self.fallback.flush()

    def isatty(self) -> bool:
        return False


class _Records(logging.Handler):
    """On the root logger: a record emitted on a thread running a try goes to its log."""

    def emit(self, record: logging.LogRecord) -> None:
        current = _routes.current()
        if current is not None:
            current.write(f"{record.levelname} {record.name}", self.format(record) + "\n")


_handler = _Records()


def _install() -> None:
    """Route the process's streams and root logger through here (again if replaced,
    as Celery's worker redirects the streams to its logger)."""
    if not isinstance(sys.stdout, _Stream):
        sys.stdout = _Stream("stdout", sys.stdout)
    if not isinstance(sys.stderr, _Stream):
        sys.stderr = _Stream("stderr", sys.stderr)
    root = logging.getLogger()
    if _handler not in root.handlers:
        root.addHandler(_handler)
    _routes.ensure_flusher()


@contextmanager
def capturing(try_log: TryLog) -> Iterator[TryLog]:
    """Send this thread's output to `try_log` while the block runs; store the rest at the end."""
    _install()
    _routes.local.log = try_log
    with _routes.lock:
        _routes.running.add(try_log)
    try:
        yield try_log
    finally:
        _routes.local.log = None
        with _routes.lock:
            _routes.running.discard(try_log)
        try_log.flush()


def try_log_of(engine: Engine, claim: Claim, max_bytes: int) -> TryLog:
    """The log of `claim`'s try, stored through `engine` (the worker's, in autocommit)."""
    ti_id, try_number = claim.ti_id, claim.try_number

    def write_chunk(start_byte: int, data: str, at: datetime) -> None:
        with engine.connect() as conn:
            logs.append(
                conn, ti_id=ti_id, try_number=try_number, start_byte=start_byte, data=data, at=at
            )

    def trim(below: int) -> None:
        with engine.connect() as conn:
            logs.trim(conn, ti_id=ti_id, try_number=try_number, below=below)

    return TryLog(write_chunk, trim, max_bytes=max_bytes)


def error_text(result: Result) -> str:
    """A failed try's error for its log: the traceback of what the callable raised, if any."""
    if result.exception is None:
        return f"{result.error}\n"
    return "".join(traceback.format_exception(result.exception))
