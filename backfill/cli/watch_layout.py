"""How a `backfill watch` frame fits the terminal: which way its grid goes, and how many
dates and tasks it shows.

Invariants:
- pure: sizes in, a `Layout` out; the command reads exactly the page of dates a
  layout shows (`store.grid.window`), so a frame costs a screenful of TIs at any size;
- a frame needs at most `height - 1` lines (the last one is the cursor's: a live
  display that fills the screen scrolls) and `width` columns, on a terminal of at
  least `MIN_WIDTH` x `MIN_HEIGHT`: on a smaller one, one date and one task still
  show and the frame overflows rather than showing nothing;
- a grid either has dates down and tasks across, or tasks down and dates across
  (transposed); it is the one that shows more tasks, then more cells, then
  readable task names, then dates down;
- the tasks shown are the first ones in creation order; the dates shown are a page,
  placed by `first_date` around the frontier of work.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence
from dataclasses import dataclass

from backfill.model.states import TIState

CELL = 2  # columns per cell: a glyph and a space
DATE_LABEL = 16  # "2024-01-01 13:00": the widest date label (a daily one is 10)
NAME_MAX = 24  # a task's name as a row label (tasks down) is cut to this
HEADER_NAME_MAX = 12  # a task's name as a column header (dates down) is cut to this
KEY_NAME_MAX = 20  # a task's name in the key of numbered columns is cut to this
# The key takes the lines it needs, up to a quarter of the grid's (3 at least), after
# `MIN_ROWS` dates; a name it leaves out is counted. A ✗ in column 18 wants a name more
# than the grid wants a 25th date of `·`.
KEY_SHARE, KEY_MIN_LINES = 4, 3
GAP = 2  # columns between two entries of the legend or the key
MIN_WIDTH, MIN_HEIGHT = 80, 16
MIN_ROWS = 5  # dates the key of numbered columns leaves room for
DATES_DOWN_CORNER = "date ↓ task →"  # above the row labels: which way the grid goes
TASKS_DOWN_CORNER = "task ↓ date →"
# Title, status line, the grid's header, a line for the dates hidden on each side,
# and the cursor's line below the frame; the legend and the key come on top.
_FIXED_LINES = 6


class Orientation(enum.Enum):
    DATES_DOWN = "dates down, tasks across"
    TASKS_DOWN = "tasks down, dates across"


@dataclass(frozen=True, kw_only=True)
class Layout:
    """What one frame shows of a backfill, and where."""

    orientation: Orientation
    width: int
    height: int
    dates: int  # dates on the page
    tasks: int  # tasks shown: the first ones
    # Columns headed by their names: task names (dates down; else numbers and a key),
    # or dates (tasks down; else a date every few columns).
    named: bool
    legend_lines: int
    key_lines: int  # lines of the key of numbered columns (0 when named)


def pack(widths: Sequence[int], width: int, gap: int = GAP) -> list[range]:
    """Entries of `widths`, in order, greedily packed into lines of `width` columns,
    `gap` apart: the indexes of each line's entries. An entry wider than a line gets
    a line of its own."""
    lines: list[range] = []
    start, used = 0, 0
    for i, w in enumerate(widths):
        if i > start and used + gap + w > width:
            lines.append(range(start, i))
            start, used = i, 0
        used = w if i == start else used + gap + w
    if start < len(widths):
        lines.append(range(start, len(widths)))
    return lines


def legend_widths(total_tis: int) -> list[int]:
    """The width of each state's legend entry (`■ success 1234`) at its widest: its
    count has as many digits as the total of TIs."""
    digits = len(str(max(total_tis, 0)))
    return [2 + len(state.value) + 1 + digits for state in TIState]


def key_entry(number: int, task_id: str) -> str:
    """`12 load_orders` (the name cut to `KEY_NAME_MAX`)."""
    return f"{number} {cut(task_id, KEY_NAME_MAX)}"


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def plan(*, width: int, height: int, dates: int, task_ids: Sequence[str], total_tis: int) -> Layout:
    """The layout of a frame of `dates` dates and `task_ids` on a `width` x `height`
    terminal (see the module's invariants for the choice)."""
    legend = len(pack(legend_widths(total_tis), width))
    room = height - _FIXED_LINES - legend  # for the rows, the key and the tasks left out
    across = _dates_down(width, room, dates, task_ids)
    down = _tasks_down(width, room, dates, task_ids)
    best = max(across, down, key=_merit)
    return dataclasses.replace(best, width=width, height=height, legend_lines=legend)


def _merit(layout: Layout) -> tuple[int, int, bool, bool]:
    return (
        layout.tasks,
        layout.tasks * layout.dates,
        layout.named or layout.orientation is Orientation.TASKS_DOWN,  # task names readable
        layout.orientation is Orientation.DATES_DOWN,
    )


def _dates_down(width: int, room: int, dates: int, task_ids: Sequence[str]) -> Layout:
    named_width = DATE_LABEL + sum(1 + min(len(t), HEADER_NAME_MAX) for t in task_ids)
    named = named_width <= width
    tasks = len(task_ids) if named else min(len(task_ids), max(1, (width - DATE_LABEL) // CELL))
    room -= tasks < len(task_ids)  # a line says how many tasks are left out
    key = 0
    if not named:
        entries = [len(key_entry(i + 1, t)) for i, t in enumerate(task_ids[:tasks])]
        most = min(max(KEY_MIN_LINES, room // KEY_SHARE), room - min(dates, MIN_ROWS))
        key = max(0, min(len(pack(entries, width)), most))
    room -= key
    return Layout(
        orientation=Orientation.DATES_DOWN,
        width=width,
        height=0,
        dates=min(dates, max(1, room)),
        tasks=tasks,
        named=named,
        legend_lines=0,
        key_lines=key,
    )


def _tasks_down(width: int, room: int, dates: int, task_ids: Sequence[str]) -> Layout:
    tasks = len(task_ids) if len(task_ids) <= room else max(1, room - 1)
    across = width - task_label_width(task_ids)
    named = dates * (1 + DATE_LABEL) <= across
    return Layout(
        orientation=Orientation.TASKS_DOWN,
        width=width,
        height=0,
        dates=dates if named else min(dates, max(1, across // CELL)),
        tasks=tasks,
        named=named,
        legend_lines=0,
        key_lines=0,
    )


def task_label_width(task_ids: Sequence[str]) -> int:
    """Tasks down: the width of the row labels, task names cut to `NAME_MAX`."""
    longest = min(max((len(t) for t in task_ids), default=0), NAME_MAX)
    return max(longest, len(TASKS_DOWN_CORNER))


def first_date(frontier: int, shown: int, total: int) -> int:
    """How many dates come before the page: the frontier of work a quarter of the way
    into it (the dates just finished before it, for context), the page kept within
    the backfill's dates."""
    return max(0, min(frontier - shown // 4, total - shown))
