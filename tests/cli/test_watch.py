"""`backfill watch` through the CLI (click's runner: stdout is not a terminal), on both
backends: one frame, plain glyphs, sized by COLUMNS and LINES; an unknown id refused.

The live grid in a real terminal is tests/cli/test_watch_terminal.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from support.cli import assert_user_error, invoke
from support.factories import dated_backfill, move_runs, move_tis

from backfill.model.states import RunState, TIState
from backfill.store import reports

T0 = datetime(2024, 1, 1, tzinfo=UTC)
TASKS = ["extract", "clean", "load"]


@pytest.fixture
def small(engine: Engine) -> int:
    """Four dates: the first done, the second running clean after extract failed once
    (up_for_retry), the others not started."""
    dates = [T0 + timedelta(days=d) for d in range(4)]
    with engine.begin() as conn:
        made = dated_backfill(conn, "etl", dates, TASKS)
        move_tis(conn, made, TIState.SUCCESS, dates[:1])
        move_runs(conn, made, RunState.SUCCESS, dates[:1])
        move_tis(conn, made, TIState.UP_FOR_RETRY, dates[1:2], ["extract"])
        move_tis(conn, made, TIState.RUNNING, dates[1:2], ["clean"])
        move_runs(conn, made, RunState.RUNNING, dates[1:2])
    return made


def test_once_prints_one_plain_frame(home: Path, db_url: str, small: int) -> None:
    result = invoke(home, "watch", str(small), "--once", db_url=db_url)
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0] == (
        f"backfill {small} · etl · running · 2024-01-01 .. 2024-01-04 UTC · 4 dates x 3 tasks"
    )
    assert lines[1] == (
        "· none 7  ○ scheduled 0  □ queued 0  ▶ running 1  ■ success 3  ✗ failed 0  » skipped 0"
        "  ↻ up_for_retry 1  ◑ up_for_reschedule 0  ▲ upstream_failed 0  ∅ removed 0"
    )  # the legend: every state, with its count
    assert "runs 1/4 done · rate - · ETA - · read " in result.stdout
    assert "Ctrl-C" not in result.stdout  # nothing to stop
    grid = lines[lines.index(next(x for x in lines if x.startswith("date ↓ task →"))) :]
    assert grid[0].split() == ["date", "↓", "task", "→", "extract", "clean", "load"]
    assert [row.split() for row in grid[1:]] == [
        ["2024-01-01", "■", "■", "■"],
        ["2024-01-02", "↻", "▶", "·"],
        ["2024-01-03", "·", "·", "·"],
        ["2024-01-04", "·", "·", "·"],
    ]
    assert "\x1b" not in result.stdout


def test_once_shows_the_pace_the_driver_reported(
    home: Path, db_url: str, engine: Engine, small: int
) -> None:
    """A single frame has no rate of its own: the driver's samples give one."""
    samples = [[T0.isoformat(), 0], [(T0 + timedelta(seconds=60)).isoformat(), 6]]
    with engine.begin() as conn:
        reports.write(conn, small, {"samples": samples, "waiting": {}, "deadlock": None})
    result = invoke(home, "watch", str(small), "--once", db_url=db_url)
    assert result.exit_code == 0, result.output
    assert "runs 1/4 done · rate 6.0 TI/min · ETA 1m30s" in result.stdout  # 9 TIs left


def test_not_a_terminal_prints_one_frame_and_says_so(home: Path, db_url: str, small: int) -> None:
    result = invoke(home, "watch", str(small), db_url=db_url)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"backfill {small} · etl · running")
    assert result.stderr == (
        "stdout is not a terminal: printed one frame (`--once` does so without this note; "
        "a terminal shows the live grid)\n"
    )


def test_a_large_backfill_is_paged_to_the_frame(home: Path, db_url: str, engine: Engine) -> None:
    dates = [T0 + timedelta(hours=h) for h in range(300)]
    tasks = [f"step_{i:02d}" for i in range(30)]
    with engine.begin() as conn:
        made = dated_backfill(conn, "hourly", dates, tasks)
        move_tis(conn, made, TIState.SUCCESS, dates[:120])
        move_runs(conn, made, RunState.SUCCESS, dates[:120])
        move_runs(conn, made, RunState.RUNNING, dates[120:122])
    size = {"COLUMNS": "100", "LINES": "30"}
    result = invoke(home, "watch", str(made), "--once", db_url=db_url, env=size)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) <= 29
    assert max(len(line) for line in lines) <= 100
    rows = [line for line in lines if line.startswith("2024-01-")]
    first = 120 - len(rows) // 4  # the first running date a quarter of the way down
    assert len(rows) > 10
    assert rows[0].startswith(f"{dates[first]:%Y-%m-%d %H:%M} ")
    assert [row.split()[2:] for row in rows] == [["■"] * 30] * (120 - first) + [["·"] * 30] * (
        len(rows) - (120 - first)
    )
    assert f"↑ {first} earlier dates not shown, from 2024-01-01 00:00: ■ success {first * 30}" in (
        lines
    )
    later = 300 - first - len(rows)
    assert f"↓ {later} later dates not shown, to 2024-01-13 11:00: · none {later * 30}" in lines


def test_unknown_id(home: Path, db_url: str, small: int) -> None:
    for args in (["watch", "999"], ["watch", "999", "--once"]):
        assert_user_error(invoke(home, *args, db_url=db_url), "no backfill with id 999")


def test_no_database_yet_is_an_unknown_id_and_creates_nothing(home: Path) -> None:
    assert_user_error(invoke(home, "watch", "1", "--once"), "no backfill with id 1")
    assert not home.exists()
