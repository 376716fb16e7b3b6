"""One frame of `backfill watch`, drawn: a pure function of what was read.

Invariants:
- pure: `render(frame, layout)` reads nothing and asks no clock; the same frame
  and layout always draw the same lines;
- the frame fits its layout: every line is one `Text` that never wraps (cut at
  the edge instead), and the lines are those `watch_layout.plan` counted; what is
  not shown is said: the dates hidden on either side with their TIs counted by
  state, the tasks left out, the names the key of numbered columns leaves out;
- every TI state has its own glyph and colour (`CELLS`, after Airflow's
  colours), shown with its count in the legend; the glyphs differ, so a frame
  without colour (a pipe, `NO_COLOR`) still reads;
- a mapped task's cell is its TIs in that run folded to their most telling
  state (`store.grid.TELLING`), its glyph underlined;
- dates are UTC, as `backfill status` shows them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, time

from rich.console import Group
from rich.text import Text

from backfill.cli.meter import Tally, format_duration
from backfill.cli.watch_layout import (
    CELL,
    DATES_DOWN_CORNER,
    HEADER_NAME_MAX,
    NAME_MAX,
    TASKS_DOWN_CORNER,
    Layout,
    Orientation,
    cut,
    key_entry,
    pack,
    task_label_width,
)
from backfill.model.states import BackfillState, RunState, TIState
from backfill.store.grid import GridRow, Window
from backfill.store.status import Summary

_S = TIState
CELLS: dict[TIState, tuple[str, str]] = {  # glyph, style
    _S.NONE: ("·", "dim"),
    _S.SCHEDULED: ("○", "dim #d2b48c"),  # tan
    _S.QUEUED: ("□", "#808080"),  # grey
    _S.RUNNING: ("▶", "bold #00ff00"),  # lime
    _S.SUCCESS: ("■", "#008000"),  # green
    _S.FAILED: ("✗", "bold #ff0000"),  # red
    _S.SKIPPED: ("»", "#ff69b4"),  # hot pink
    _S.UP_FOR_RETRY: ("↻", "#ffd700"),  # gold
    _S.UP_FOR_RESCHEDULE: ("◑", "#40e0d0"),  # turquoise
    _S.UPSTREAM_FAILED: ("▲", "#ffa500"),  # orange
    _S.REMOVED: ("∅", "#d3d3d3"),  # light grey
}
_B = BackfillState
_BACKFILL_STYLES = {
    _B.QUEUED: "bold #808080",
    _B.RUNNING: "bold #00ff00",
    _B.PAUSED: "bold #ffd700",
    _B.SUCCESS: "bold #008000",
    _B.FAILED: "bold #ff0000",
    _B.CANCELLED: "bold #ffa500",
}
_RUN_LABELS = {  # a date's label says how its run stands
    RunState.QUEUED: "dim",
    RunState.RUNNING: "bold",
    RunState.SUCCESS: "",
    RunState.FAILED: "#ff0000",
}


@dataclass(frozen=True, kw_only=True)
class Frame:
    """One reading of a backfill, with everything a frame shows."""

    summary: Summary  # the backfill, its runs and TIs counted by state
    task_ids: tuple[str, ...]  # every task of the backfill, in creation order
    window: Window  # the page of dates the layout shows, the others counted
    tally: Tally  # rate and ETA over the frames read so far
    at: datetime  # when it was read (UTC)
    live: bool  # redrawn until the backfill ends: the frame says how to stop


def render(frame: Frame, layout: Layout) -> Group:
    """The frame as lines: title, legend, status, then the grid (see the invariants)."""
    if not frame.window.rows:  # a backfill with no runs: its dates were all done before it
        grid = [_line(("no runs, so no task instances to draw", "dim"))]
    elif _down(layout):
        grid = _dates_down(frame, layout)
    else:
        grid = _tasks_down(frame, layout)
    return Group(_title(frame), *_legend(frame, layout), _status(frame), *grid)


def _down(layout: Layout) -> bool:
    return layout.orientation is Orientation.DATES_DOWN


def _line(*parts: str | tuple[str, str]) -> Text:
    return Text.assemble(*parts, no_wrap=True, overflow="ellipsis")


def _title(frame: Frame) -> Text:
    found = frame.summary
    dates, tasks = sum(found.runs.values()), len(frame.task_ids)
    timed = _timed([found.start, found.end])
    return _line(
        (f"backfill {found.id}", "bold"),
        f" · {found.dag_id} · ",
        (found.state.value, _BACKFILL_STYLES[found.state]),
        f" · {_date(found.start, timed)} .. {_date(found.end, timed)} UTC",
        f" · {dates} date{'s' * (dates != 1)} x {tasks} task{'s' * (tasks != 1)}",
    )


def _legend(frame: Frame, layout: Layout) -> list[Text]:
    counts = frame.summary.task_instances
    entries = [_entry(state, counts.get(state.value, 0)) for state in TIState]
    lines = pack([e.cell_len for e in entries], layout.width)
    gap = Text("  ", no_wrap=True, overflow="ellipsis")  # its settings go to the joined line
    return [gap.join(entries[i] for i in line) for line in lines]


def _entry(state: TIState, n: int) -> Text:
    glyph, style = CELLS[state]
    return Text.assemble((glyph, style), f" {state.value} {n}", style="" if n else "dim")


def _status(frame: Frame) -> Text:
    tally = frame.tally
    rate = "-" if tally.rate is None else f"{_per_minute(tally.rate)} TI/min"
    if tally.eta == 0:
        eta = "every TI finished"
    else:
        eta = "ETA -" if tally.eta is None or tally.eta < 0 else f"ETA {format_duration(tally.eta)}"
    parts = [f"runs {tally.runs_done}/{tally.runs_total} done", f"rate {rate}", eta]
    parts.append(f"read {frame.at:%H:%M:%S} UTC")
    if frame.live:
        parts.append("Ctrl-C to stop")
    return _line(" · ".join(parts))


def _per_minute(per_second: float) -> str:
    per_minute = per_second * 60
    return f"{per_minute:.0f}" if abs(per_minute) >= 10 else f"{per_minute:.1f}"


def _counts(counts: Mapping[TIState, int]) -> list[str | tuple[str, str]]:
    parts: list[str | tuple[str, str]] = []
    for state in TIState:
        if counts.get(state):
            glyph, style = CELLS[state]
            parts += [" ", (glyph, style), f" {state.value} {counts[state]}"]
    return parts or [" no TIs"]


def _timed(dates: Sequence[datetime]) -> bool:
    return any(d.timetz().replace(tzinfo=None) != time() for d in dates)


def _date(moment: datetime, timed: bool) -> str:
    return moment.strftime("%Y-%m-%d %H:%M" if timed else "%Y-%m-%d")


def _hidden_dates(frame: Frame, arrows: str) -> tuple[Text | None, Text | None]:
    """The line of the dates before the page and that of the dates after it (None when
    there are none), each with its TIs counted by state."""
    window, found = frame.window, frame.summary
    after = sum(found.runs.values()) - window.offset - len(window.rows)
    timed = _timed([found.start, found.end])

    def line(arrow: str, n: int, which: str, edge: str, counts: Mapping[TIState, int]) -> Text:
        what = f"{arrow} {n} {which} date{'s' * (n != 1)} not shown, {edge}:"
        return _line(what, *_counts(counts))

    start, end = _date(found.start, timed), _date(found.end, timed)
    earlier = window.offset
    first = line(arrows[0], earlier, "earlier", f"from {start}", window.before) if earlier else None
    last = line(arrows[1], after, "later", f"to {end}", window.after) if after > 0 else None
    return first, last


def _left_out(frame: Frame, layout: Layout, arrow: str) -> list[Text]:
    """The tasks not shown, with their TIs on the dates shown counted by state."""
    hidden = frame.task_ids[layout.tasks :]
    if not hidden:
        return []
    counts = Counter(
        state
        for row in frame.window.rows
        for task_id in hidden
        if (state := row.cells.get(task_id)) is not None
    )
    n = len(hidden)
    what = f"{arrow} {n} more task{'s' * (n != 1)} not shown, on the dates shown:"
    return [_line(what, *_counts(counts))]


def _cell(row: GridRow, task_id: str) -> tuple[str, str]:
    state = row.cells.get(task_id)
    if state is None:
        return (" ", "")
    glyph, style = CELLS[state]
    return (glyph, f"{style} underline") if task_id in row.mapped else (glyph, style)


def _header(corner: str, label: int, heads: Sequence[str], named: bool) -> Text:
    """The corner (which way the grid goes) over the row labels, then the columns'
    names, or every few columns a number or a date (`_ruler`)."""
    return _line(
        (corner.ljust(label) + " ", "dim"), (" ".join(heads) if named else _ruler(heads), "bold")
    )


def _row(label: tuple[str, str], cells: Sequence[tuple[str, str]], widths: Sequence[int]) -> Text:
    """A row label, then each cell's glyph in the middle of its column."""
    parts: list[str | tuple[str, str]] = [label]
    for cell, width in zip(cells, widths, strict=True):
        pad = width - 1
        parts += [" " * (1 + pad // 2), cell, " " * (pad - pad // 2)]
    return _line(*parts)


def _dates_down(frame: Frame, layout: Layout) -> list[Text]:
    rows, tasks = frame.window.rows, frame.task_ids[: layout.tasks]
    timed = _timed([row.logical_date for row in rows])
    label = max([len(DATES_DOWN_CORNER)] + [len(_date(r.logical_date, timed)) for r in rows])
    if layout.named:
        heads = [cut(t, HEADER_NAME_MAX) for t in tasks]
    else:  # numbered: 1, 5, 10, ... (the key names them)
        heads = [str(i) if i == 1 or i % 5 == 0 else "" for i in range(1, len(tasks) + 1)]
    widths = [len(head) for head in heads] if layout.named else [1] * len(tasks)
    before, after = _hidden_dates(frame, "↑↓")
    lines = [_header(DATES_DOWN_CORNER, label, heads, layout.named)]
    lines += [before] if before else []
    for row in rows:
        label_of = (_date(row.logical_date, timed).ljust(label), _RUN_LABELS[row.run_state])
        lines.append(_row(label_of, [_cell(row, t) for t in tasks], widths))
    lines += [after] if after else []
    lines += _left_out(frame, layout, "→")
    return lines + ([] if layout.named else _key(frame.summary.id, tasks, layout))


def _tasks_down(frame: Frame, layout: Layout) -> list[Text]:
    rows, tasks = frame.window.rows, frame.task_ids[: layout.tasks]
    timed = _timed([row.logical_date for row in rows])
    label = task_label_width(frame.task_ids)
    heads = [_date(row.logical_date, timed) for row in rows]
    widths = [len(head) for head in heads] if layout.named else [1] * len(rows)
    lines = [_header(TASKS_DOWN_CORNER, label, heads, layout.named)]
    for task_id in tasks:
        label_of = (cut(task_id, NAME_MAX).ljust(label), "")
        lines.append(_row(label_of, [_cell(row, task_id) for row in rows], widths))
    lines += [line for line in _hidden_dates(frame, "←→") if line is not None]
    return lines + _left_out(frame, layout, "↓")


def _ruler(heads: Sequence[str]) -> str:
    """Each head over its column (columns `CELL` apart), as many as fit without
    touching the one before; empty heads are skipped."""
    ruler = [" "] * (len(heads) * CELL)
    free = 0  # the first column not written yet
    for i, head in enumerate(heads):
        at = i * CELL
        if head and at >= free and at + len(head) <= len(ruler):
            ruler[at : at + len(head)] = head
            free = at + len(head) + 1
    return "".join(ruler).rstrip()


def _key(backfill_id: int, tasks: Sequence[str], layout: Layout) -> list[Text]:
    """`1 extract  2 clean ...` in at most `layout.key_lines` lines, saying how many
    names it left out."""
    entries = [key_entry(i + 1, t) for i, t in enumerate(tasks)]
    for kept in range(len(entries), -1, -1):
        shown = entries[:kept]
        if kept < len(entries):
            shown.append(f"… {len(entries) - kept} more: `backfill tasks {backfill_id}`")
        lines = pack([len(e) for e in shown], layout.width)
        if len(lines) <= layout.key_lines:
            return [_line("  ".join(shown[i] for i in line)) for line in lines]
    return []
