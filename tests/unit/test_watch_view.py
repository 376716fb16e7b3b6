"""The frames of `backfill watch`, drawn from hand-made readings: pure, no database.

Each TI state has its own glyph and colour, in the grid and in the legend; the status
line says the rate per minute, the ETA and how to stop. The layout (which way, how
much) is tests/unit/test_watch_layout.py.
"""

from __future__ import annotations

import dataclasses

from rich.console import Console
from rich.style import Style
from support.frames import draw, fits, progress, reading, tasks

from backfill.cli.meter import Tally
from backfill.cli.watch_layout import Orientation, plan
from backfill.cli.watch_view import CELLS, render
from backfill.model.states import TIState
from backfill.store.grid import Window

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


def test_a_backfill_without_runs_says_so() -> None:
    frame, layout = reading(1, ["a"], progress(1), size=(100, 30), live=False)
    empty = Window(offset=0, rows=(), before={}, after={})
    summary = dataclasses.replace(frame.summary, runs={}, task_instances={})
    frame = dataclasses.replace(frame, summary=summary, task_ids=(), window=empty)
    layout = plan(width=100, height=30, dates=0, task_ids=(), total_tis=0)
    lines = fits(frame, layout)
    assert lines[0].endswith(" · 0 dates x 0 tasks")
    assert lines[-1] == "no runs, so no task instances to draw"


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
