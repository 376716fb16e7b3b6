"""`backfill watch ID [--once]`: a backfill's task instances as a live grid in the terminal.

Invariants:
- read only: the embedded database is never created here; a missing one holds
  no backfill. An unknown id is one line and exit 2, as for `backfill status`;
- each frame is read in ONE consistent snapshot: the counts (`status.summary`)
  and the page of dates the layout shows (`store.grid`), so a frame costs a
  screenful of TIs plus aggregates at any backfill size, and its cells, hidden
  dates and counts agree;
- a terminal: the frame is redrawn in place every `INTERVAL` seconds, fitted to
  the terminal's size at each redraw, until the backfill ends (its last frame
  stays on screen; exit 0) or Ctrl-C (the last frame stays; exit 130, no traceback);
- `--once`, or stdout not a terminal (a pipe, a file, CI logs): ONE frame, then
  exit 0. A live grid redrawn in a pipe would be a stream of screens that nobody
  reads, so without `--once` a line on stderr says why only one frame was printed.
  A pipe's frame is `COLUMNS` x `LINES` (default `PIPE_WIDTH` x `PIPE_HEIGHT`) and
  has no colour, only the glyphs;
- rate and ETA come from `cli.meter`, over the frames of this watch: a single
  frame (`--once`) has no rate to show.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime

import click
from rich.console import Console
from rich.live import Live
from sqlalchemy.engine import Engine

from backfill.cli.meter import Meter
from backfill.cli.output import BACKFILL_ID, EXIT_INTERRUPTED, console
from backfill.cli.watch_layout import Layout, first_date, plan
from backfill.cli.watch_view import Frame, render
from backfill.config import Settings
from backfill.model.states import BACKFILL_FINISHED
from backfill.store import db, grid, reads, status
from backfill.store.errors import BackfillNotFound

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
            out.print(render(*read_frame(engine, backfill_id, _size(out), Meter(), live=False)))
            if not once:
                click.echo(
                    "stdout is not a terminal: printed one frame (`--once` does so "
                    "without this note; a terminal shows the live grid)",
                    err=True,
                )
            return 0
        return _live(engine, backfill_id, out)
    finally:
        engine.dispose()


def read_frame(
    engine: Engine, backfill_id: int, size: tuple[int, int], meter: Meter, *, live: bool
) -> tuple[Frame, Layout]:
    """One frame of backfill `backfill_id` for a `size` (width, height) terminal, read in
    one snapshot; `live`: it will be redrawn (unless the backfill has ended)."""
    with reads.reading(engine) as conn:
        found = status.summary(conn, backfill_id)
        if found is None:
            raise BackfillNotFound(backfill_id)
        task_ids = grid.task_ids(conn, backfill_id)
        dates = sum(found.runs.values())
        total_tis = sum(found.task_instances.values())
        width, height = size
        layout = plan(
            width=width, height=height, dates=dates, task_ids=task_ids, total_tis=total_tis
        )
        offset = first_date(grid.frontier(conn, backfill_id), layout.dates, dates)
        window = grid.window(conn, backfill_id, offset=offset, limit=layout.dates)
    frame = Frame(
        summary=found,
        task_ids=task_ids,
        window=window,
        tally=meter.tally(found.runs, found.task_instances),
        at=datetime.now(UTC),
        live=live and found.state not in BACKFILL_FINISHED,
    )
    return frame, layout


def _size(out: Console) -> tuple[int, int]:
    if out.is_terminal or os.environ.get("LINES"):
        return out.size.width, out.size.height
    return out.size.width, PIPE_HEIGHT


def _live(engine: Engine, backfill_id: int, out: Console) -> int:
    """Redraw until the backfill ends (0) or Ctrl-C (130); the last frame stays."""
    meter = Meter(window=RATE_WINDOW)
    try:
        frame, layout = read_frame(engine, backfill_id, _size(out), meter, live=True)
        with Live(console=out, auto_refresh=False, transient=False) as shown:
            while True:
                shown.update(render(frame, layout), refresh=True)
                if not frame.live:
                    return 0
                time.sleep(INTERVAL)
                frame, layout = read_frame(engine, backfill_id, _size(out), meter, live=True)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
