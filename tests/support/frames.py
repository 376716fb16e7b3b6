"""Hand-made readings of a backfill, drawn as `backfill watch` frames: no database.

- `reading`: the frame and layout `watch` would make of a backfill whose TI states
  a function gives, on a terminal of a size: the same plan and page placement, the
  store's reads done by hand;
- `draw`: a frame drawn on a recording console; `fits`: drawn, and checked to fit
  its terminal (the lines counted, no grid line cut).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from rich.console import Console

from backfill.cli.meter import Tally
from backfill.cli.watch_layout import Layout, first_date, plan
from backfill.cli.watch_view import Frame, render
from backfill.model.states import BackfillState, RunState, TIState
from backfill.store.grid import GridRow, Window
from backfill.store.status import Summary

T0 = datetime(2024, 1, 1, tzinfo=UTC)
AT = datetime(2024, 5, 1, 12, 3, 1, tzinfo=UTC)
StateOf = Callable[[int, int], TIState]  # (date index, task index) -> state


def progress(done: int) -> StateOf:
    """Dates before `done` succeeded, the next two run, the rest wait."""
    s, r, n = TIState.SUCCESS, TIState.RUNNING, TIState.NONE
    return lambda date, _task: s if date < done else (r if date < done + 2 else n)


def reading(
    dates: int,
    task_ids: list[str],
    state_of: StateOf,
    *,
    size: tuple[int, int],
    frontier: int = 0,
    step: timedelta = timedelta(days=1),
    tally: Tally | None = None,
    live: bool = True,
) -> tuple[Frame, Layout]:
    """The frame and layout `backfill watch` would make of this backfill on a terminal of
    `size`: the same plan and page placement, the store's reads done by hand."""
    logical = [T0 + i * step for i in range(dates)]

    def counted(days: range) -> dict[TIState, int]:
        return dict(Counter(state_of(d, t) for d in days for t in range(len(task_ids))))

    counts = counted(range(dates))
    layout = plan(width=size[0], height=size[1], dates=dates, task_ids=task_ids,
                  total_tis=sum(counts.values()))  # fmt: skip
    offset = first_date(frontier, layout.dates, dates)
    shown = range(offset, min(offset + layout.dates, dates))
    rows = tuple(
        GridRow(logical_date=logical[d], run_state=RunState.RUNNING,
                cells={t: state_of(d, i) for i, t in enumerate(task_ids)})
        for d in shown
    )  # fmt: skip
    before, after = counted(range(offset)), counted(range(shown.stop, dates))
    summary = Summary(
        id=7, dag_id="etl", state=BackfillState.RUNNING, start=logical[0], end=logical[-1],
        options={}, conf={}, created_at=T0, updated_at=T0, runs={"running": dates},
        task_instances={s.value: n for s, n in counts.items()},
    )  # fmt: skip
    tally = tally or Tally(runs_done=0, runs_total=dates, task_instances={}, rate=None, eta=None)
    window = Window(offset=offset, rows=rows, before=before, after=after)
    frame = Frame(summary=summary, task_ids=tuple(task_ids), window=window, tally=tally, at=AT,
                  live=live)  # fmt: skip
    return frame, layout


def draw(
    frame: Frame, layout: Layout, *, color: bool = True, width: int | None = None
) -> tuple[Console, list[str]]:
    """The frame drawn on a recording console of the layout's size (or `width`)."""
    console = Console(
        width=width or layout.width, height=layout.height, record=True, force_terminal=True,
        color_system="truecolor" if color else None, legacy_windows=False,
    )  # fmt: skip
    console.print(render(frame, layout))
    return console, console.export_text(styles=False).splitlines()


def tasks(n: int, prefix: str = "task_") -> list[str]:
    return [f"{prefix}{i:02d}" for i in range(1, n + 1)]


PROSE = ("backfill ", "runs ", "↑ ", "↓ ", "← ", "→ ")  # lines that may end in "…"


def fits(frame: Frame, layout: Layout) -> list[str]:
    """The frame's lines: at most the terminal's height but the cursor's line. Drawn
    wider, the same lines (none wrapped), and only prose needs the extra width: the
    console cuts it with an ellipsis, but the grid, legend and key fit by themselves."""
    _, lines = draw(frame, layout)
    assert len(lines) <= layout.height - 1, "\n".join(lines)
    _, wide = draw(frame, layout, width=layout.width + 100)
    assert len(wide) == len(lines)
    cut = [line for line in wide if len(line) > layout.width and not line.startswith(PROSE)]
    assert not cut, "\n".join(cut)
    return lines
