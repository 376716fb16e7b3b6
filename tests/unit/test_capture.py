"""The try log's buffer, cap and routing (`workers.capture`), with the store replaced by
a list: what is checked here is the arithmetic of offsets and cuts, which the
end-to-end tests (tests/cli/test_logs.py) then check through the real database."""

from __future__ import annotations

import logging
import re
import sys
import threading
from datetime import datetime

import pytest

from workers.capture import TryLog, capturing

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


class Stored:
    """The chunks a TryLog wrote and trimmed, as the database would hold them."""

    def __init__(self, *, fail: int = 0) -> None:
        self.chunks: dict[int, str] = {}
        self.fail = fail  # the next `fail` writes raise

    def write(self, start: int, text: str, _at: datetime) -> None:
        if self.fail:
            self.fail -= 1
            raise OSError("database unreachable")
        self.chunks[start] = text

    def trim(self, below: int) -> None:
        self.chunks = {k: v for k, v in self.chunks.items() if k >= below}

    def text(self) -> str:
        return "".join(self.chunks[k] for k in sorted(self.chunks))

    def first(self) -> int:
        return min(self.chunks)


def make(stored: Stored, max_bytes: int = 10_000) -> TryLog:
    return TryLog(stored.write, stored.trim, max_bytes=max_bytes)


def test_each_line_is_stamped_with_its_stream_and_one_flush_is_one_chunk() -> None:
    stored = Stored()
    log = make(stored)
    log.write("stdout", "hello\nwor")
    log.write("stdout", "ld\n")
    log.write("stderr", "oops\n")
    log.flush()
    assert len(stored.chunks) == 1
    lines = stored.text().splitlines()
    assert [re.sub(STAMP, "T", line) for line in lines] == [
        "T [stdout] hello",
        "T [stdout] world",
        "T [stderr] oops",
    ]
    log.flush()  # nothing new: nothing written
    assert len(stored.chunks) == 1


def test_offsets_continue_across_chunks_and_an_empty_log_writes_nothing() -> None:
    stored = Stored()
    log = make(stored)
    log.flush()
    assert stored.chunks == {}
    log.write("stdout", "a\n")
    log.flush()
    first = stored.text()
    log.write("stdout", "b\n")
    log.flush()
    assert sorted(stored.chunks) == [0, len(first.encode())]


def test_over_the_cap_the_tail_is_kept_and_offsets_say_how_much_was_cut() -> None:
    stored = Stored()
    log = make(stored, max_bytes=2000)
    total = 0
    for i in range(200):
        line = f"line {i:03d} é\n"  # multi-byte: offsets count bytes
        log.write("stdout", line)
        if i % 10 == 9:
            log.flush()
    log.flush()
    kept = stored.text()
    total = stored.first() + len(kept.encode())
    assert len(kept.encode()) <= 2000
    assert kept.rstrip().endswith("line 199 é")
    assert stored.first() > 0  # the reader's "N bytes cut"
    assert total > 2000
    numbers = [int(m) for m in re.findall(r"line (\d{3})", kept)]
    assert numbers == list(range(numbers[0], 200))  # a contiguous tail


def test_a_burst_larger_than_the_cap_is_cut_before_it_is_stored() -> None:
    stored = Stored()
    log = make(stored, max_bytes=1024)
    log.write("stdout", "x" * 5000 + "\nlast line\n")
    log.flush()
    kept = stored.text()
    assert len(kept.encode()) <= 1024
    assert kept.endswith("last line\n")
    assert stored.first() + len(kept.encode()) > 5000


def test_a_failed_write_keeps_the_text_for_the_next_flush() -> None:
    stored = Stored(fail=1)
    log = make(stored)
    log.write("stdout", "kept\n")
    log.flush()  # fails: nothing stored, nothing lost
    assert stored.chunks == {}
    log.write("stdout", "more\n")
    log.flush()
    assert sorted(stored.chunks) == [0]
    assert "kept" in stored.text()
    assert "more" in stored.text()


def test_capturing_routes_this_threads_output_and_records_only(
    capsys: pytest.CaptureFixture[str],
) -> None:
    stored = Stored()
    other = threading.Thread(target=lambda: print("from another thread"))
    with capturing(make(stored)):
        print("printed")
        print("to stderr", file=sys.stderr)
        logging.getLogger("my.task").warning("logged %d", 42)
        other.start()
        other.join()
    text = stored.text()
    assert re.search(STAMP + r" \[stdout\] printed\n", text)
    assert re.search(STAMP + r" \[stderr\] to stderr\n", text)
    assert "[WARNING my.task] logged 42" in text
    assert "another thread" not in text
    print("after")  # the block is over: back to the real stdout
    assert "after" in capsys.readouterr().out
    assert "after" not in stored.text()
