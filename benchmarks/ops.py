"""The operator's commands on the 439,200-TI scale backfill, timed as a user runs them.

Invariants:
- each command runs in its own process (`benchmarks.commands`) with its
  stdout discarded (`> /dev/null`): what is timed is producing the output,
  not a terminal drawing it; wall time is launch to exit, RSS its own peak;
- a command that is refused (e.g. an option not implemented yet), fails or
  times out is recorded with its exit code and the last line of its log,
  and never fails the bench: its figure is then simply not met.
"""

from __future__ import annotations

from typing import Any

from benchmarks.commands import Ran, Stdout
from benchmarks.figure import MB
from benchmarks.phases import Stage

TIMEOUT = 300.0  # seconds one operator command may take


def commands(backfill_id: int) -> dict[str, tuple[str, ...]]:
    bid = str(backfill_id)
    return {
        "status": ("backfill", "status", bid),
        "tasks_page": ("backfill", "tasks", bid),
        "tasks_jsonl": ("backfill", "tasks", bid, "--output", "jsonl"),
        "list": ("backfill", "list"),
    }


def measure(stage: Stage, backfill_id: int, tis: int) -> dict[str, Any]:
    results = {}
    for name, argv in commands(backfill_id).items():
        ran = stage.commands.run(f"ops-{name}", *argv, timeout=TIMEOUT, stdout=Stdout.DISCARD)
        results[name] = _result(ran)
    jsonl = results["tasks_jsonl"]
    jsonl["ti_per_second"] = tis / jsonl["seconds"] if jsonl["ok"] else None
    return results


def _result(ran: Ran) -> dict[str, Any]:
    ok = ran.exit_code == 0
    lines = ran.log.read_text(errors="replace").splitlines() if ran.log.exists() else []
    return {
        "command": " ".join(ran.argv),
        "ok": ok,
        "exit_code": ran.exit_code,
        "seconds": ran.seconds,
        # The command's own time, after the interpreter started and imported it.
        "in_process_seconds": None if ran.counts is None else ran.counts["seconds"],
        "peak_rss_mb": None if ran.counts is None else ran.counts["max_rss_kib"] * 1024 / MB,
        "error": None if ok else (lines[-1] if lines else ran.describe()),
    }
