"""`backfill watch ID [--once]`: a backfill's task instances as a live grid in the terminal.

Invariants:
- read only: the embedded database is never created here; a missing one holds
  no backfill. An unknown id is one line and exit 2, as for `backfill status`;
- each frame is read in ONE consistent snapshot: the counts (`status.summary`)
  and the page of dates the layout shows (`store.grid`), so a frame costs a
  screenful of TIs plus aggregates at any backfill size, and its cells, hidden
  dates and counts agree;
- a terminal: the frame is redrawn in place every `INTERVAL` seconds (or twice
  the time the last frame took to read, if longer: two aggregates over the TIs
  take ~0.5 s at 440k TIs), fitted to the terminal's size at each redraw, until
  the backfill ends (its last frame stays on screen; exit 0) or Ctrl-C (the last
  frame stays; exit 130, no traceback);
- `--once`, or stdout not a terminal (a pipe, a file, CI logs): ONE frame, then
  exit 0. A live grid redrawn in a pipe would be a stream of screens that nobody
  reads, so without `--once` a line on stderr says why only one frame was printed.
  A pipe's frame is `COLUMNS` x `LINES` (default `PIPE_WIDTH` x `PIPE_HEIGHT`) and
  has no colour, only the glyphs;
- rate and ETA come from `cli.meter`, over the frames of this watch; until it
  has two (a single `--once` frame), from the samples the backfill's driver
  keeps with it (`planning.story.pace`), while it runs.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import click
from rich.console import Console
from rich.live import Live
from sqlalchemy.engine import Engine

from backfill.cli.meter import Meter, Tally
from backfill.cli.output import BACKFILL_ID, EXIT_INTERRUPTED, console
from backfill.cli.watch_layout import Layout, first_date, plan
from backfill.cli.watch_view import Frame, render
from backfill.client.story import unfinished
from backfill.config import Settings
from backfill.model.states import BACKFILL_FINISHED, BackfillState
from backfill.planning.story import pace
from backfill.store import db, grid, reads, reports, status
from backfill.store.errors import BackfillNotFound
from backfill.store.status import Summary

INTERVAL = 1.5  # seconds between two frames of a live grid
RATE_WINDOW = 60.0  # seconds of frames the rate is computed over
PIPE_HEIGHT = 50  # lines of a frame printed to a pipe, unless LINES says otherwise


@click.command("watch")
@click.argument("backfill_id", metavar="ID", type=BACKFILL_ID)
@click.option("--once", is_flag=True, help="Print one frame and exit (for scripts).")
def watch_command(backfill_id: int, once: bool) -> int:
    """Watch backfill ID: logical dates x tasks, one cell per TI coloured by state, with
    counts, rate and ETA, redrawn until the backfill ends or Ctrl-C."""
    out = console()
    engine = db.open_engine(Settings.from_env(), create=False)
    if engine is None:
        raise BackfillNotFound(backfill_id)
    try:
        if once or not out.is_terminal:
            out.print(render(*Reader(engine, backfill_id).read(_size(out), live=False)))
            if not once:
                click.echo(
                    "stdout is not a terminal: printed one frame (`--once` does so "
                    "without this note; a terminal shows the live grid)",
                    err=True,
                )
            return 0
        return _live(Reader(engine, backfill_id, Meter(window=RATE_WINDOW)), out)
    finally:
        engine.dispose()


@dataclass
class Reader:
    """Reads the frames of one watch of backfill `backfill_id`."""

    engine: Engine
    backfill_id: int
    meter: Meter = field(default_factory=Meter)  # rate and ETA over the frames read
    # Read with the first frame only: a backfill's TIs are all made when it is created
    # (`engine.create`, one transaction), so its tasks never change; one aggregate over
    # every TI fewer per frame.
    task_ids: tuple[str, ...] | None = None
    seconds: float = 0.0  # how long the last frame took to read

    def read(self, size: tuple[int, int], *, live: bool) -> tuple[Frame, Layout]:
        """A frame for a `size` (width, height) terminal, read in one snapshot; `live`:
        it will be redrawn (unless the backfill has ended)."""
        started = time.monotonic()
        with reads.reading(self.engine) as conn:
            found = status.summary(conn, self.backfill_id)
            if found is None:
                raise BackfillNotFound(self.backfill_id)
            if self.task_ids is None:
                self.task_ids = grid.task_ids(conn, self.backfill_id)
            dates, total_tis = sum(found.runs.values()), sum(found.task_instances.values())
            width, height = size
            layout = plan(
                width=width, height=height, dates=dates, task_ids=self.task_ids, total_tis=total_tis
            )
            offset = first_date(grid.frontier(conn, self.backfill_id), layout.dates, dates)
            window = grid.window(conn, self.backfill_id, offset=offset, limit=layout.dates)
            report = reports.read(conn, self.backfill_id)
        self.seconds = time.monotonic() - started
        frame = Frame(
            summary=found,
            task_ids=self.task_ids,
            window=window,
            tally=_reported_pace(self.meter.tally(found.runs, found.task_instances), found, report),
            at=datetime.now(UTC),
            live=live and found.state not in BACKFILL_FINISHED,
        )
        return frame, layout


def _reported_pace(tally: Tally, found: Summary, report: dict[str, Any] | None) -> Tally:
    """`tally`, with the driver's reported rate and ETA while this watch has none yet."""
    if tally.rate is not None or found.state is not BackfillState.RUNNING:
        return tally
    per_minute, eta = pace(report, left=unfinished(found))
    if per_minute is None:
        return tally
    return dataclasses.replace(tally, rate=per_minute / 60, eta=eta)


def _size(out: Console) -> tuple[int, int]:
    if out.is_terminal or os.environ.get("LINES"):
        return out.size.width, out.size.height
    return out.size.width, PIPE_HEIGHT


def _live(reader: Reader, out: Console) -> int:
    """Redraw until the backfill ends (0) or Ctrl-C (130); the last frame stays."""
    try:
        frame, layout = reader.read(_size(out), live=True)
        with Live(console=out, auto_refresh=False, transient=False) as shown:
            while True:
                shown.update(render(frame, layout), refresh=True)
                if not frame.live:
                    return 0
                # A large backfill's frame takes a while to read: the database is kept
                # busy a third of the time at most.
                time.sleep(max(INTERVAL, 2 * reader.seconds))
                frame, layout = reader.read(_size(out), live=True)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
