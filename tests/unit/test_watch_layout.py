"""How a `backfill watch` frame fits its terminal: which way the grid goes, the page of
dates around the frontier, the tasks and names left out, counted. Every frame is drawn
on a recording console whose lines and columns are counted: at 1,000 dates x 50 tasks
and at every size tried, it fits.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from support.frames import draw, fits, progress, reading, tasks

from backfill.cli.watch_layout import MIN_HEIGHT, MIN_WIDTH, Orientation, first_date, pack, plan

# --- which way the grid goes ------------------------------------------------------------


@pytest.mark.parametrize(
    ("dates", "task_ids", "height", "way", "shown"),
    [
        (10, ["extract", "clean", "load"], 40, (Orientation.DATES_DOWN, True), (10, 3)),
        (3, tasks(25, "compute_metric_"), 40, (Orientation.TASKS_DOWN, True), (3, 25)),
        (1, tasks(30), 40, (Orientation.TASKS_DOWN, True), (1, 30)),
        (5, tasks(50), 40, (Orientation.DATES_DOWN, False), (5, 50)),  # 50 names: not down
        (5, tasks(50), 70, (Orientation.TASKS_DOWN, True), (5, 50)),  # unless it is tall
        (1000, tasks(50), 40, (Orientation.DATES_DOWN, False), (27, 50)),
        (1000, tasks(200), 40, (Orientation.DATES_DOWN, False), (25, 52)),  # most tasks shown
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
    assert len(rows) == layout.dates == 27
    assert rows[0].startswith("2025-01-29 ")  # 6 finished dates above the frontier
    assert rows[6].split()[1:] == ["▶"] * 50
    assert [len(row.split()) for row in rows] == [51] * 27
    assert "↑ 394 earlier dates not shown, from 2024-01-01: ■ success 19700" in lines
    assert "↓ 579 later dates not shown, to 2026-09-26: · none 28950" in lines
    assert lines[4].startswith("date ↓ task → 1       5         10")  # numbered columns
    key = lines[lines.index(next(x for x in lines if x.startswith("1 task_01  2 task_02"))) :]
    assert len(key) == layout.key_lines == 5
    assert key[-1].endswith("49 task_49  50 task_50")  # every column named


def test_a_key_too_long_for_its_share_counts_the_names_left_out() -> None:
    frame, layout = reading(1000, tasks(50, "compute_metric_"), progress(9), size=(120, 30))
    lines = fits(frame, layout)
    assert layout.key_lines == 5  # a quarter of the grid's 22 lines
    assert lines[-5].startswith("1 compute_metric_01  2 compute_metric_02  ")
    left_out = re.fullmatch(r".*  … (\d+) more: `backfill tasks 7`", lines[-1])
    named = re.findall(r"(\d+) compute_metric_", " ".join(lines[-5:]))
    assert left_out
    assert named == [str(i) for i in range(1, 51 - int(left_out[1]))]


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


def test_tasks_left_out_are_counted_on_the_dates_shown() -> None:
    frame, layout = reading(5, tasks(80), progress(2), size=(120, 30))
    lines = fits(frame, layout)
    assert layout.tasks == 52
    assert "→ 28 more tasks not shown, on the dates shown: · none 28 ▶ running 56 ■ success 56" in (
        lines
    )


def test_pack_fills_lines_in_order() -> None:
    assert pack([3, 3, 3], 8) == [range(0, 2), range(2, 3)]
    assert pack([10, 2], 5) == [range(0, 1), range(1, 2)]  # too wide: a line of its own
    assert pack([], 5) == []
