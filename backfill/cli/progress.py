"""Progress of a backfill driven in the foreground: the live display and the final report.

Invariants:
- a display only renders what it is given (counts by state, and the reasons
  TIs were held back); it reads nothing and decides nothing;
- `--output json`: nothing is displayed (`QuietDisplay`); the caller prints
  the final JSON alone, so stdout stays machine-readable;
- not a terminal (`LineDisplay`): one plain line at most every `interval`
  seconds, and at once whenever a run finishes; the last state is always
  printed when the display closes;
- a terminal (`LiveDisplay`): a rich Live panel redrawn in place;
- a notice (e.g. "database unreachable since 12:03:01, retrying") is said
  once, on its own line to `warn` (stderr), and a live panel also shows the
  latest one until the next;
- the rate is TIs finished per second over a sliding window, and the ETA the
  TIs left at that rate (`backfill.cli.meter`, shared with `watch`); neither
  is shown before there is a rate to show;
- the final report names every failed TI grouped by its error, and every
  deadlocked TI grouped by the reason it cannot run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Protocol

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from backfill.cli.meter import Clock, Meter, Tally, format_duration


class TIKeyLike(Protocol):
    """What a report needs of a TI's key (`backfill.engine.coordinator.TIKey` has it)."""

    @property
    def dag_id(self) -> str: ...
    @property
    def task_id(self) -> str: ...
    @property
    def logical_date(self) -> datetime: ...
    @property
    def try_number(self) -> int: ...
    @property
    def map_index(self) -> int: ...


def describe_ti(key: TIKeyLike) -> str:
    """`dag/task/2016-01-01T00:00:00+00:00 try 1`, as workers log it and Flower shows it
    (a mapped task's TI: `task[3]`)."""
    task = key.task_id if key.map_index < 0 else f"{key.task_id}[{key.map_index}]"
    what = f"{key.dag_id}/{task}/{key.logical_date.isoformat()}"
    return f"{what} try {key.try_number}" if key.try_number else f"{what} (never ran)"


def format_counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{state} {n}" for state, n in counts.items() if n) or "none"


def format_line(tally: Tally) -> str:
    """`runs 3/10 done, TIs: success 18, running 2; 4.1 TI/s, ETA 12s`."""
    line = f"runs {tally.runs_done}/{tally.runs_total} done, TIs: "
    line += format_counts(tally.task_instances)
    speed = []
    if tally.rate is not None:
        speed.append(f"{tally.rate:.1f} TI/s")
    if tally.eta is not None:
        speed.append(f"ETA {format_duration(tally.eta)}")
    if speed:
        line += "; " + ", ".join(speed)
    if tally.waiting:
        held = "; ".join(f"{reason} ({n})" for reason, n in tally.waiting.items())
        line += f"; held back: {held}"
    return line


class Display(Protocol):
    def update(
        self,
        runs: Mapping[str, int],
        task_instances: Mapping[str, int],
        waiting: Mapping[str, int] | None = None,
    ) -> None: ...

    def notice(self, text: str) -> None: ...

    def close(self) -> None: ...


class QuietDisplay:
    """`--output json`: the final JSON is all there is on stdout; notices go to `warn`."""

    def __init__(self, warn: Callable[[str], None]) -> None:
        self._warn = warn

    def update(
        self,
        runs: Mapping[str, int],
        task_instances: Mapping[str, int],
        waiting: Mapping[str, int] | None = None,
    ) -> None:
        pass

    def notice(self, text: str) -> None:
        self._warn(text)

    def close(self) -> None:
        pass


class LineDisplay:
    """Plain lines for logs and pipes (see the module invariants)."""

    def __init__(
        self,
        write: Callable[[str], None],
        *,
        interval: float = 5.0,
        clock: Clock = time.monotonic,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self._write = write
        self._warn = warn or write
        self._interval = interval
        self._clock = clock
        self._meter = Meter(clock=clock)
        self._last: Tally | None = None
        self._printed: Tally | None = None
        self._printed_at = float("-inf")

    def update(
        self,
        runs: Mapping[str, int],
        task_instances: Mapping[str, int],
        waiting: Mapping[str, int] | None = None,
    ) -> None:
        tally = self._meter.tally(runs, task_instances, waiting)
        self._last = tally
        run_finished = self._printed is not None and tally.runs_done > self._printed.runs_done
        if run_finished or self._clock() - self._printed_at >= self._interval:
            self._print(tally)

    def notice(self, text: str) -> None:
        self._warn(text)

    def close(self) -> None:
        if self._last is not None and self._last is not self._printed:
            self._print(self._last)

    def _print(self, tally: Tally) -> None:
        self._write(format_line(tally))
        self._printed = tally
        self._printed_at = self._clock()


class LiveDisplay:
    """A panel redrawn in place on a terminal."""

    def __init__(
        self,
        console: Console,
        *,
        title: str,
        warn: Callable[[str], None],
        clock: Clock = time.monotonic,
    ) -> None:
        self._title = title
        self._warn = warn
        self._clock = clock
        self._started = clock()
        self._meter = Meter(clock=clock)
        self._tally: Tally | None = None
        self._notice: str | None = None
        self._live = Live(
            get_renderable=self._render, console=console, refresh_per_second=4, transient=False
        )
        self._live.start()

    def update(
        self,
        runs: Mapping[str, int],
        task_instances: Mapping[str, int],
        waiting: Mapping[str, int] | None = None,
    ) -> None:
        self._tally = self._meter.tally(runs, task_instances, waiting)

    def notice(self, text: str) -> None:
        self._notice = text
        self._warn(text)  # Live redirects stderr: the line scrolls by above the panel

    def close(self) -> None:
        self._live.stop()

    def _render(self) -> Group:
        elapsed = format_duration(self._clock() - self._started)
        head = Text(f"{self._title} · {elapsed}", style="bold")
        tally = self._tally
        if tally is None:
            return Group(head, Text("starting..."))
        grid = Table.grid(padding=(0, 1))
        grid.add_column(style="bold")
        grid.add_column()
        runs = Table.grid(padding=(0, 1))
        runs.add_row(
            ProgressBar(total=max(tally.runs_total, 1), completed=tally.runs_done, width=30),
            f"{tally.runs_done}/{tally.runs_total} done",
        )
        grid.add_row("runs", runs)
        grid.add_row("TIs", format_counts(tally.task_instances))
        rate = "-" if tally.rate is None else f"{tally.rate:.1f} TI/s"
        eta = "-" if tally.eta is None else format_duration(tally.eta)
        grid.add_row("rate", f"{rate}, ETA {eta}")
        for reason, n in tally.waiting.items():
            grid.add_row("held", f"{n} TI{'s' if n != 1 else ''}: {reason}")
        if self._notice is not None:
            grid.add_row("notice", self._notice)
        return Group(head, grid)


def make_display(
    console: Console, *, quiet: bool, title: str, warn: Callable[[str], None]
) -> Display:
    """Quiet for JSON (notices to `warn`), live on a terminal, plain lines otherwise."""
    if quiet:
        return QuietDisplay(warn)
    if console.is_terminal:
        return LiveDisplay(console, title=title, warn=warn)
    return LineDisplay(lambda line: console.print(line, soft_wrap=True), warn=warn)


# --- the final report --------------------------------------------------------------------


def group_failed(
    failed: Sequence[tuple[TIKeyLike, str | None]], *, no_error: str
) -> dict[str, list[TIKeyLike]]:
    """Failed TIs grouped by their error, first seen first; those without one last (`no_error`)."""
    groups: dict[str, list[TIKeyLike]] = {}
    for key, error in failed:
        if error:
            groups.setdefault(error, []).append(key)
    without = [key for key, error in failed if not error]
    if without:
        groups[no_error] = without
    return groups


def print_groups(
    console: Console, heading: str, groups: Mapping[str, Sequence[TIKeyLike]], *, limit: int = 50
) -> None:
    """`heading`, then each reason with the TIs it holds (at most `limit` named per reason)."""
    console.print(heading)
    for reason, keys in groups.items():
        console.print(f"  {reason} ({len(keys)}):", soft_wrap=True)
        for key in keys[:limit]:
            console.print(f"    {describe_ti(key)}", soft_wrap=True)
        if len(keys) > limit:
            console.print(f"    ... and {len(keys) - limit} more (see `backfill tasks`)")
