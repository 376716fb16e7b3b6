"""The frames of `backfill watch`, drawn from hand-made readings: pure, no database.

A frame fits the terminal it is drawn for (lines and columns counted on a recording
console), at 1,000 dates x 50 tasks and at every size tried; each TI state has its
own glyph and colour; the grid goes the way that shows the most.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from rich.console import Console
from rich.style import Style

from backfill.cli.meter import Tally
from backfill.cli.watch_layout import (
    MIN_HEIGHT,
    MIN_WIDTH,
    Layout,
    Orientation,
    first_date,
    pack,
    plan,
)
from backfill.cli.watch_view import CELLS, Frame, render
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


# --- states: one glyph and one colour each --------------------------------------------


def test_every_state_has_its_own_glyph_and_colour() -> None:
    assert set(CELLS) == set(TIState)
    glyphs = [glyph for glyph, _ in CELLS.values()]
    assert len(set(glyphs)) == len(glyphs)
    assert all(len(glyph) == 1 and Console().measure(glyph).maximum == 1 for glyph in glyphs)
    colours = {state: Style.parse(style).color for state, (_, style) in CELLS.items()}
    rgb = {state: tuple(c.get_truecolor()) for state, c in colours.items() if c is not None}
    assert rgb == {  # Airflow's colours
        TIState.SCHEDULED: (210, 180, 140),  # tan, dimmed
        TIState.QUEUED: (128, 128, 128),  # grey
        TIState.RUNNING: (0, 255, 0),  # lime
        TIState.SUCCESS: (0, 128, 0),  # green
        TIState.FAILED: (255, 0, 0),  # red
        TIState.SKIPPED: (255, 105, 180),  # hot pink
        TIState.UP_FOR_RETRY: (255, 215, 0),  # gold
        TIState.UP_FOR_RESCHEDULE: (64, 224, 208),  # turquoise
        TIState.UPSTREAM_FAILED: (255, 165, 0),  # orange
        TIState.REMOVED: (211, 211, 211),  # light grey
    }
    assert Style.parse(CELLS[TIState.NONE][1]) == Style(dim=True)  # not yet scheduled: dim


def test_each_cell_is_its_states_glyph_in_its_colour() -> None:
    states = list(TIState)
    frame, layout = reading(1, [s.value for s in states], lambda _d, t: states[t], size=(100, 40))
    assert layout.orientation is Orientation.TASKS_DOWN  # 11 names: readable down only
    console, lines = draw(frame, layout)
    for state in states:
        glyph, style = CELLS[state]
        [row] = [line for line in lines if line.startswith(state.value + " ")]
        assert row.split()[-1] == glyph
    segments = list(console.render(render(frame, layout)))
    styled = {(seg.text, seg.style) for seg in segments}
    for glyph, style in CELLS.values():
        assert (glyph, Style.parse(style)) in styled


def test_the_legend_counts_every_state_zeros_dimmed() -> None:
    frame, layout = reading(4, tasks(3), progress(2), size=(120, 30))
    _, lines = draw(frame, layout)
    legend = " ".join(lines[1 : 1 + layout.legend_lines])
    for state in TIState:
        glyph, _ = CELLS[state]
        count = {"success": 6, "running": 6}.get(state.value, 0)
        assert f"{glyph} {state.value} {count}" in legend


def test_without_colour_the_glyphs_still_tell_the_states() -> None:
    frame, layout = reading(3, ["a", "b"], lambda d, _t: list(TIState)[d + 3], size=(80, 24))
    console, lines = draw(frame, layout, color=False)
    assert "\x1b" not in console.export_text(styles=True)
    assert [line.split()[1:] for line in lines if line.startswith("2024-")] == [
        ["▶", "▶"], ["■", "■"], ["✗", "✗"],
    ]  # fmt: skip


# --- which way the grid goes ------------------------------------------------------------


@pytest.mark.parametrize(
    ("dates", "task_ids", "height", "way", "shown"),
    [
        (10, ["extract", "clean", "load"], 40, (Orientation.DATES_DOWN, True), (10, 3)),
        (3, tasks(25, "compute_metric_"), 40, (Orientation.TASKS_DOWN, True), (3, 25)),
        (1, tasks(30), 40, (Orientation.TASKS_DOWN, True), (1, 30)),
        (5, tasks(50), 40, (Orientation.DATES_DOWN, False), (5, 50)),  # 50 names: not down
        (5, tasks(50), 70, (Orientation.TASKS_DOWN, True), (5, 50)),  # unless it is tall
        (1000, tasks(50), 40, (Orientation.DATES_DOWN, False), (29, 50)),
        (1000, tasks(200), 40, (Orientation.DATES_DOWN, False), (28, 52)),  # most tasks shown
        (2000, tasks(20), 40, (Orientation.TASKS_DOWN, False), (53, 20)),  # more cells
    ],
)
def test_the_grid_goes_the_way_that_shows_most(
    dates: int,
    task_ids: list[str],
    height: int,
    way: tuple[Orientation, bool],
    shown: tuple[int, int],
) -> None:
    layout = plan(width=120, height=height, dates=dates, task_ids=task_ids, total_tis=99999)
    assert (layout.orientation, layout.named) == way
    assert (layout.dates, layout.tasks) == shown


# --- paging: 1,000 dates x 50 tasks in 120 x 40 ----------------------------------------------


def test_a_thousand_dates_page_around_the_frontier_within_the_terminal() -> None:
    frame, layout = reading(1000, tasks(50), progress(400), size=(120, 40), frontier=400)
    lines = fits(frame, layout)
    assert lines[0] == (
        "backfill 7 · etl · running · 2024-01-01 .. 2026-09-26 UTC · 1000 dates x 50 tasks"
    )
    rows = [line for line in lines if line[:4] == "2025"]
    assert len(rows) == layout.dates == 29
    assert rows[0].startswith("2025-01-28 ")  # 7 finished dates above the frontier
    assert rows[7].split()[1:] == ["▶"] * 50
    assert [len(row.split()) for row in rows] == [51] * 29
    assert "↑ 393 earlier dates not shown, from 2024-01-01: ■ success 19650" in lines
    assert "↓ 578 later dates not shown, to 2026-09-26: · none 28900" in lines
    assert lines[4].startswith("date ↓ task → 1       5         10")  # numbered columns
    key = [line for line in lines if line.startswith("1 task_01  2 task_02")]
    assert key
    assert lines[-1].endswith("more: `backfill tasks 7`")


def test_the_page_keeps_within_the_dates() -> None:
    assert first_date(400, 28, 1000) == 393
    assert first_date(3, 28, 1000) == 0
    assert first_date(999, 28, 1000) == 972
    assert first_date(0, 28, 10) == 0


@pytest.mark.parametrize("shape", [(1000, 50), (10, 5), (3, 25), (1000, 200), (1, 1), (400, 8)])
@pytest.mark.parametrize("width", [MIN_WIDTH, 120, 200])
@pytest.mark.parametrize("height", [MIN_HEIGHT, 24, 40, 60])
def test_every_frame_fits_its_terminal(shape: tuple[int, int], width: int, height: int) -> None:
    dates, n = shape
    step = timedelta(hours=1) if dates == 400 else timedelta(days=1)  # 16-column labels
    frame, layout = reading(dates, tasks(n, "t"), progress(dates // 2), size=(width, height),
                            frontier=dates // 2, step=step)  # fmt: skip
    lines = fits(frame, layout)
    cells = sum(line.count("■") + line.count("▶") + line.count("·") for line in lines)
    assert cells <= width * height // 2  # never the 50,000 cells


def test_a_tiny_terminal_still_shows_a_date_and_a_task() -> None:
    frame, layout = reading(1000, tasks(50), progress(500), size=(30, 8), frontier=500)
    _, lines = draw(frame, layout)
    assert (layout.dates, layout.tasks) >= (1, 1)
    assert any(line.startswith("2025-05-") and "▶" in line for line in lines)


def test_a_backfill_without_runs_says_so() -> None:
    frame, layout = reading(1, ["a"], progress(1), size=(100, 30), live=False)
    empty = Window(offset=0, rows=(), before={}, after={})
    summary = dataclasses.replace(frame.summary, runs={}, task_instances={})
    frame = dataclasses.replace(frame, summary=summary, task_ids=(), window=empty)
    layout = plan(width=100, height=30, dates=0, task_ids=(), total_tis=0)
    lines = fits(frame, layout)
    assert lines[0].endswith(" · 0 dates x 0 tasks")
    assert lines[-1] == "no runs, so no task instances to draw"


def test_tasks_left_out_are_counted_on_the_dates_shown() -> None:
    frame, layout = reading(5, tasks(80), progress(2), size=(120, 30))
    lines = fits(frame, layout)
    assert layout.tasks == 52
    assert "→ 28 more tasks not shown, on the dates shown: · none 28 ▶ running 56 ■ success 56" in (
        lines
    )


# --- the status line ------------------------------------------------------------------------


def test_status_says_rate_per_minute_eta_and_how_to_stop() -> None:
    tally = Tally(runs_done=4, runs_total=10, task_instances={}, rate=5.2, eta=3725.0)
    frame, layout = reading(10, ["a"], progress(4), size=(120, 30), tally=tally)
    _, lines = draw(frame, layout)
    assert lines[1 + layout.legend_lines] == (
        "runs 4/10 done · rate 312 TI/min · ETA 1h02m · read 12:03:01 UTC · Ctrl-C to stop"
    )


def test_a_single_frame_has_no_rate_and_an_ended_one_nothing_left() -> None:
    frame, layout = reading(10, ["a"], progress(4), size=(120, 30), live=False)
    _, lines = draw(frame, layout)
    assert "runs 0/10 done · rate - · ETA - · read 12:03:01 UTC" in lines
    done = Tally(runs_done=10, runs_total=10, task_instances={}, rate=None, eta=0.0)
    frame, layout = reading(10, ["a"], progress(10), size=(120, 30), tally=done, live=False)
    _, lines = draw(frame, layout)
    assert "runs 10/10 done · rate - · every TI finished · read 12:03:01 UTC" in lines


def test_pack_fills_lines_in_order() -> None:
    assert pack([3, 3, 3], 8) == [range(0, 2), range(2, 3)]
    assert pack([10, 2], 5) == [range(0, 1), range(1, 2)]  # too wide: a line of its own
    assert pack([], 5) == []
