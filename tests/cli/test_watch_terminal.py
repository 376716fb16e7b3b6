"""`backfill watch` in a real terminal: tmux, 120 x 40, its screen captured with colours.

Each test starts a private tmux server (its own socket, killed at the end) whose pane
runs the installed `backfill` script on a backfill written to the embedded default
database under BACKFILL_HOME. Panes stay after their command exits (remain-on-exit), so
the last frame can be read; the pane's shell writes the exit status to a file. Every
wait is on what the screen shows or on that file.
Without tmux the tests skip on a laptop and fail in CI (`.ci/run` installs it).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from rich.color import ColorSystem
from rich.style import Style
from sqlalchemy.engine import Engine
from support.factories import dated_backfill, move_runs, move_tis
from support.states import force_state
from support.waiting import wait_until

from backfill.cli.watch_view import CELLS
from backfill.config import Settings
from backfill.model.states import BackfillState, RunState, TIState
from backfill.store import db
from backfill.store.schema import backfills

SCRIPT = Path(sys.executable).with_name("backfill")
WIDTH, HEIGHT = 120, 40
T0 = datetime(2024, 1, 1, tzinfo=UTC)
TASKS = ["extract", "clean", "transform", "load", "report"]
TIMEOUT = 30.0  # seconds for a frame to show, or a command to end, on a loaded machine
ESCAPES = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class Terminal:
    """A private tmux server with one session, `watch`, of WIDTH x HEIGHT."""

    socket: str
    config: Path
    status: Path  # where the pane's shell writes the command's exit status
    socket_path: Path | None = None  # the server's socket file, once started

    def tmux(self, *args: str) -> str:
        env = {k: v for k, v in os.environ.items() if k != "TMUX"}  # never the user's tmux
        command = ["tmux", "-L", self.socket, "-f", str(self.config), *args]
        run = subprocess.run
        done = run(command, check=False, env=env, capture_output=True, text=True, timeout=10)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def start(self, *args: str, home: Path) -> None:
        """`backfill ARGS` in the pane, on the embedded database under `home`; the size
        is the pane's own (no COLUMNS or LINES), colours as rich finds them.

        A shell runs it and writes its exit status to `status`: tmux's own record of it
        (#{pane_dead_status}) is unreliable, as tmux can miss the SIGCHLD of a pane
        that exits (tmux/tmux#311) and leave it a zombie. The shell's trap on INT is a
        handler, not an ignore, so the command gets Ctrl-C as usual (exec resets it)
        and the shell outlives it to write the status."""
        unset = ("COLUMNS", "LINES", "NO_COLOR", "FORCE_COLOR", "BACKFILL_DATABASE_URL")
        command = ["env", *(f"--unset={name}" for name in unset), f"BACKFILL_HOME={home}"]
        command += [str(SCRIPT), *args]
        script = f'trap : INT; "$@"; echo $? > {shlex.quote(str(self.status))}'
        shell = shlex.join(["sh", "-c", script, "sh", *command])
        self.tmux("new-session", "-d", "-s", "watch", "-x", str(WIDTH), "-y", str(HEIGHT), shell)
        self.socket_path = Path(self.tmux("display-message", "-p", "#{socket_path}").strip())

    def kill(self) -> None:
        """Kill this server (by its own socket) and remove the socket file it leaves."""
        kill = ["tmux", "-L", self.socket, "kill-server"]
        subprocess.run(kill, check=False, capture_output=True, timeout=10)  # may be gone
        if self.socket_path is not None:
            self.socket_path.unlink(missing_ok=True)

    def screen(self, *, colours: bool = False) -> str:
        """What the pane shows, its scrollback included (`colours`: SGR escapes kept)."""
        return self.tmux("capture-pane", "-p", "-S", "-", *(["-e"] if colours else []))

    def exit_status(self) -> int | None:
        """The command's exit status once it has ended; None while it runs."""
        written = self.status.read_text() if self.status.exists() else ""
        return int(written) if written.endswith("\n") else None

    def wait_for(self, text: str, what: str) -> str:
        def shows() -> str | None:
            screen = self.screen()
            return screen if text in screen else None

        return wait_until(shows, timeout=TIMEOUT, what=what, explain=self.screen)

    def wait_exit(self) -> int:
        status = wait_until(
            lambda: (s,) if (s := self.exit_status()) is not None else None,
            timeout=TIMEOUT,
            what="backfill watch to exit",
            explain=self.screen,
        )
        return status[0]


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Terminal]:
    if shutil.which("tmux") is None:
        message = "tmux is not installed: the real-terminal tests of `backfill watch` need it"
        if os.environ.get("CI"):
            pytest.fail(f"{message}. CI is set: they must not be skipped", False)
        pytest.skip(message)
    config = tmp_path / "tmux.conf"
    # The pane stays when its shell exits, showing the last frame to capture.
    config.write_text("set -g remain-on-exit on\nset -g default-terminal tmux-256color\n")
    term = Terminal(f"backfill-watch-{uuid.uuid4().hex[:12]}", config, tmp_path / "status")
    try:
        yield term
    finally:
        term.kill()


@pytest.fixture
def embedded(home: Path, _test_databases: object) -> Iterator[Engine]:
    """The embedded default database under `home`, migrated; its journals are checked
    after the test as any test database's are."""
    settings = Settings.from_env({"BACKFILL_HOME": str(home)})
    _test_databases.add(settings.database_url)  # type: ignore[attr-defined]
    engine = db.open_engine(settings, create=True)
    assert engine is not None
    yield engine
    engine.dispose()


def days(n: int) -> list[datetime]:
    return [T0 + timedelta(days=d) for d in range(n)]


def small_backfill(engine: Engine) -> int:
    """Ten dates of five tasks: 0-3 done (clean failed on 2, so transform and the rest
    upstream_failed there; report skipped on 3), 4 running extract, clean retrying, 5
    queued extract, the rest not started."""
    dates = days(10)
    with engine.begin() as conn:
        made = dated_backfill(conn, "example_etl", dates, TASKS)
        move_tis(conn, made, TIState.SUCCESS, dates[:4], TASKS[:2])
        move_tis(conn, made, TIState.FAILED, dates[2:3], ["clean"])
        move_tis(conn, made, TIState.SUCCESS, [dates[0], dates[1], dates[3]], TASKS[2:4])
        move_tis(conn, made, TIState.UPSTREAM_FAILED, dates[2:3], TASKS[2:])
        move_tis(conn, made, TIState.SUCCESS, dates[:2], ["report"])
        move_tis(conn, made, TIState.SKIPPED, dates[3:4], ["report"])
        move_tis(conn, made, TIState.SUCCESS, dates[4:5], ["extract"])
        move_tis(conn, made, TIState.UP_FOR_RETRY, dates[4:5], ["clean"])
        move_tis(conn, made, TIState.RUNNING, dates[5:6], ["extract"])
        move_tis(conn, made, TIState.QUEUED, dates[6:7], ["extract"])
        move_runs(conn, made, RunState.SUCCESS, [dates[0], dates[1], dates[3]])
        move_runs(conn, made, RunState.FAILED, dates[2:3])
        move_runs(conn, made, RunState.RUNNING, dates[4:7])
    return made


def coloured(state: TIState) -> str:
    """The escapes tmux shows before a cell of `state`: rich's colour for it, brought
    down to the 256 colours of tmux-256color."""
    glyph, style = CELLS[state]
    parsed = Style.parse(style)
    codes = ["\x1b[1m"] if parsed.bold else []
    codes += ["\x1b[2m"] if parsed.dim else []
    if parsed.color is not None:
        number = parsed.color.downgrade(ColorSystem.EIGHT_BIT).number
        codes.append(f"\x1b[38;5;{number}m")
    return "".join(codes) + glyph


def frame_of(screen: str) -> list[str]:
    """The lines of the last frame on the screen: from its title to its last line."""
    lines = screen.rstrip("\n").splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith("backfill "))
    end = max(i for i, line in enumerate(lines) if line.strip() and "Pane is dead" not in line)
    return lines[start : end + 1]


def test_once_draws_the_grid_in_colour(terminal: Terminal, home: Path, embedded: Engine) -> None:
    made = small_backfill(embedded)
    terminal.start("watch", str(made), "--once", home=home)
    assert terminal.wait_exit() == 0
    frame = frame_of(terminal.screen())
    assert frame[0] == (
        f"backfill {made} · example_etl · running · 2024-01-01 .. 2024-01-10 UTC"
        " · 10 dates x 5 tasks"
    )
    legend = " ".join(frame[1:3])
    for count in ("none 26", "queued 1", "running 1", "success 16", "failed 1", "skipped 1"):
        assert count in legend
    assert "up_for_retry 1" in legend
    assert "upstream_failed 3" in legend
    assert frame[3].startswith("runs 4/10 done · rate - · ETA - · read ")
    assert frame[4].split() == ["date", "↓", "task", "→", *TASKS]
    assert [row.split() for row in frame[5:]] == [
        ["2024-01-01", "■", "■", "■", "■", "■"],
        ["2024-01-02", "■", "■", "■", "■", "■"],
        ["2024-01-03", "■", "✗", "▲", "▲", "▲"],
        ["2024-01-04", "■", "■", "■", "■", "»"],
        ["2024-01-05", "■", "↻", "·", "·", "·"],
        ["2024-01-06", "▶", "·", "·", "·", "·"],
        ["2024-01-07", "□", "·", "·", "·", "·"],
        ["2024-01-08", "·", "·", "·", "·", "·"],
        ["2024-01-09", "·", "·", "·", "·", "·"],
        ["2024-01-10", "·", "·", "·", "·", "·"],
    ]
    colours = terminal.screen(colours=True)
    for state in (TIState.SUCCESS, TIState.FAILED, TIState.UPSTREAM_FAILED, TIState.RUNNING,
                  TIState.QUEUED, TIState.UP_FOR_RETRY, TIState.SKIPPED, TIState.NONE):  # fmt: skip
        assert coloured(state) in colours, state


def test_a_thousand_dates_by_fifty_tasks_fit_the_terminal(
    terminal: Terminal, home: Path, embedded: Engine
) -> None:
    dates, tasks = days(1000), [f"task_{i:02d}" for i in range(1, 51)]
    with embedded.begin() as conn:
        made = dated_backfill(conn, "wide", dates, tasks)
        move_tis(conn, made, TIState.SUCCESS, dates[:400])
        move_runs(conn, made, RunState.SUCCESS, dates[:400])
        move_tis(conn, made, TIState.RUNNING, dates[400:402], tasks[:20])
        move_runs(conn, made, RunState.RUNNING, dates[400:402])
    terminal.start("watch", str(made), "--once", home=home)
    assert terminal.wait_exit() == 0
    frame = frame_of(terminal.screen())
    assert len(frame) <= HEIGHT - 1
    assert max(len(line) for line in frame) <= WIDTH
    assert frame[0].endswith("2024-01-01 .. 2026-09-26 UTC · 1000 dates x 50 tasks")
    rows = [line for line in frame if re.match(r"\d{4}-\d\d-\d\d ", line)]
    assert 20 <= len(rows) <= 30
    first = 400 - len(rows) // 4
    assert rows[0].startswith(f"{dates[first]:%Y-%m-%d} ")
    assert rows[400 - first].split()[1:] == ["▶"] * 20 + ["·"] * 30
    assert f"↑ {first} earlier dates not shown, from 2024-01-01: ■ success {first * 50}" in frame
    later = 1000 - first - len(rows)
    assert f"↓ {later} later dates not shown, to 2026-09-26: · none {later * 50}" in frame
    assert ESCAPES.sub("", coloured(TIState.RUNNING)) == "▶"
    assert coloured(TIState.RUNNING) in terminal.screen(colours=True)


def test_live_redraws_until_the_backfill_ends(
    terminal: Terminal, home: Path, embedded: Engine
) -> None:
    made = small_backfill(embedded)
    terminal.start("watch", str(made), home=home)
    terminal.wait_for("Ctrl-C to stop", "the first live frame")
    with embedded.begin() as conn:  # extract finishes on dates 5 to 9
        move_tis(conn, made, TIState.SUCCESS, days(10)[5:], ["extract"])
    terminal.wait_for("■ success 21", "a frame with the new counts")
    wait_until(  # 5 TIs finished between two frames: a rate, and the ETA of the other 23
        lambda: re.search(r"rate [\d.]+ TI/min · ETA \d+", terminal.screen()),
        timeout=TIMEOUT,
        what="a frame with a rate and an ETA",
        explain=terminal.screen,
    )
    with embedded.begin() as conn:  # the rest ends; so does the backfill
        move_tis(conn, made, TIState.SUCCESS, days(10)[4:], TASKS[1:])
        move_runs(conn, made, RunState.SUCCESS, days(10)[4:])
        force_state(conn, backfills, backfills.c.id == made, BackfillState.FAILED)
    assert terminal.wait_exit() == 0
    frame = frame_of(terminal.screen())
    assert frame[0].startswith(f"backfill {made} · example_etl · failed · ")
    assert "Ctrl-C to stop" not in frame[3]
    assert "every TI finished" in frame[3]
    assert re.search(r"rate \d+(\.\d)? TI/min", frame[3]), frame[3]
    assert [row.split()[1] for row in frame[5:]] == ["■"] * 10  # every extract succeeded
    assert "Traceback" not in terminal.screen()


def test_ctrl_c_stops_cleanly_with_130(terminal: Terminal, home: Path, embedded: Engine) -> None:
    made = small_backfill(embedded)
    terminal.start("watch", str(made), home=home)
    terminal.wait_for("Ctrl-C to stop", "the first live frame")
    terminal.tmux("send-keys", "-t", "watch", "C-c")
    assert terminal.wait_exit() == 130
    screen = terminal.screen()
    assert "Traceback" not in screen
    assert "KeyboardInterrupt" not in screen
    assert "error:" not in screen  # the way out of a watch, not an error
    assert frame_of(screen)[0].startswith(f"backfill {made} · example_etl · running")
