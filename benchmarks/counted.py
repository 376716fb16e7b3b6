"""`python -m benchmarks.counted backfill ARGS...`: a user's command, with its SQL counted.

Runs the console script named by the first argument (`backfill`: the entry
point of pyproject's [project.scripts]) in this process, with ARGS, exactly
as the installed script would, after installing `benchmarks.sqlcount`.

Invariants:
- at exit - normal, by an error, or by SIGTERM - one JSON line is appended to
  the file named by BENCH_COUNTS (if set): `{"argv", "exit_code",
  "statements", "checkouts", "connects", "max_rss_kib", "seconds"}`;
  `max_rss_kib` is this process's peak RSS (the command's own: nothing else
  runs here), read from VmHWM, and `seconds` its time from the entry point's
  call to its end. Not ru_maxrss: on Linux it carries over fork + exec the
  RSS of the process that launched this one (the bench's), so every small
  command would report at least the bench's size;
- SIGTERM becomes a clean exit (SystemExit 143, so every `finally` runs and
  the counts are written), unless the command installs a handler of its own
  (`backfill run` and `backfill coordinator` do: they stop after the current
  pass and exit by themselves; their handler is theirs to restore);
- with BENCH_PROFILE set to a file path, the command runs under cProfile and
  its stats are dumped there (`python -m pstats PATH`).
"""

from __future__ import annotations

import cProfile
import json
import os
import resource
import signal
import sys
import time
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from benchmarks.sqlcount import SQLCounter

COUNTS_ENV = "BENCH_COUNTS"
PROFILE_ENV = "BENCH_PROFILE"
EXIT_SIGTERM = 128 + signal.SIGTERM


def _script(name: str) -> Callable[..., Any]:
    found = entry_points(group="console_scripts", name=name)
    if not found:
        raise SystemExit(f"counted: no console script named {name!r} is installed")
    loaded: Callable[..., Any] = next(iter(found)).load()
    return loaded


def _on_sigterm(_signum: int, _frame: object) -> None:
    raise SystemExit(EXIT_SIGTERM)


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    return exc.code if isinstance(exc.code, int) else 1


def peak_rss_kib() -> int:
    """This process's peak RSS in KiB: VmHWM (Linux), else ru_maxrss (see the module doc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def _write(path: str, record: dict[str, Any]) -> None:
    with Path(path).open("a") as out:
        out.write(json.dumps(record) + "\n")


def main(argv: list[str]) -> int:
    if not argv:
        raise SystemExit("usage: python -m benchmarks.counted SCRIPT [ARGS...]")
    script = _script(argv[0])
    counter = SQLCounter().install()
    signal.signal(signal.SIGTERM, _on_sigterm)
    profile_path = os.environ.get(PROFILE_ENV)
    profiler = cProfile.Profile() if profile_path else None
    sys.argv = argv  # what the script sees, as if run by name
    code = 1
    began = time.perf_counter()
    try:
        if profiler is not None:
            profiler.runcall(script)
        else:
            script()
        code = 0
    except SystemExit as exc:  # click's standalone mode always ends here
        code = _exit_code(exc)
    finally:
        seconds = time.perf_counter() - began
        if profiler is not None and profile_path:
            profiler.dump_stats(profile_path)
        counts_path = os.environ.get(COUNTS_ENV)
        if counts_path:
            counts = counter.read()
            _write(
                counts_path,
                {
                    "argv": argv,
                    "exit_code": code,
                    "statements": counts.statements,
                    "checkouts": counts.checkouts,
                    "connects": counts.connects,
                    "pings": counts.pings,
                    "max_rss_kib": peak_rss_kib(),
                    "seconds": seconds,
                },
            )
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
