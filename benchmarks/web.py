"""(w) The web page's grid at 1,000 dates x 50 tasks, through what a user opens.

    python -m benchmarks.bench --only w

A backfill of `bench_layers` (50 tasks) over 1,000 days is made by `backfill create`
on a fresh PostgreSQL database, then PAINTED by SQL (bench-only, as
`benchmarks.fastforward` does, the journal trigger off): the first 700 dates
ended (a failure every 97 cells, its downstream upstream_failed), the next 20
running (two layers done, one running), the rest not started. A real `backfill
web` then serves it, and the bench measures:
- the grid's JSON (`GET /api/v1/backfills/{id}/grid`, gzip on, as a browser
  asks): median and worst of 10 requests, and its size raw and compressed;
- in headless Chromium (Debian's, through Playwright): navigation start to
  the first grid drawn, the fetch-and-parse of a poll, a redraw of the rows
  in view, and a redraw after scrolling to the middle; and a screenshot,
  `.backfill/bench/web-grid.png`;
- the baselines, in the same run on the same database: `backfill status ID -o
  json` (the page's summary alone) and `backfill tasks ID -o json --limit 0`
  (every TI through the CLI), each timed from launch to exit.
"""

from __future__ import annotations

import gzip
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from backfill.store.db import create_engine_for
from benchmarks import stack
from benchmarks.commands import Commands, Stdout
from benchmarks.phases import BenchError

DAG_ID, RANGE, DATES, TASKS = "bench_layers", ("2024-01-01", "2026-09-26"), 1000, 50
ENDED, RUNNING = 700, 20  # dates ended, then dates running; the rest not started
TOKEN = "bench-web-token"
CHROMIUM = "/usr/bin/chromium"
REQUESTS = 10
WAIT = 60_000  # ms the page may take for any step
_LISTENING = re.compile(r"backfill web: http://[^\s]+:(\d+)/")

# One statement a table: each TI's state from its run's rank and its task's layer.
_PAINT_TIS = sa.text(
    """
    WITH ranked AS (
        SELECT id, rank() OVER (ORDER BY logical_date) - 1 AS r
        FROM dag_runs WHERE backfill_id = :backfill_id
    )
    UPDATE task_instances ti SET state = CASE
        WHEN ranked.r < :ended AND (ranked.r * 50 + ti.id) % 97 = 0 THEN 'failed'
        WHEN ranked.r < :ended AND (ranked.r * 50 + ti.id) % 97 < 3
             AND ti.task_id >= 'l3' THEN 'upstream_failed'
        WHEN ranked.r < :ended THEN 'success'
        WHEN ranked.r < :ended + :running AND ti.task_id < 'l2' THEN 'success'
        WHEN ranked.r < :ended + :running AND ti.task_id < 'l3' THEN 'running'
        WHEN ranked.r < :ended + :running THEN 'scheduled'
        ELSE 'none' END,
        try_number = CASE WHEN ranked.r < :ended + :running AND ti.task_id < 'l3' THEN 1
                     ELSE ti.try_number END
    FROM ranked WHERE ti.dag_run_id = ranked.id
    """
)
_PAINT_RUNS = sa.text(
    """
    WITH ranked AS (
        SELECT id, rank() OVER (ORDER BY logical_date) - 1 AS r
        FROM dag_runs WHERE backfill_id = :backfill_id
    )
    UPDATE dag_runs SET state = CASE
        WHEN ranked.r < :ended AND EXISTS (SELECT 1 FROM task_instances ti
            WHERE ti.dag_run_id = dag_runs.id AND ti.state = 'failed') THEN 'failed'
        WHEN ranked.r < :ended THEN 'success'
        WHEN ranked.r < :ended + :running THEN 'running'
        ELSE 'queued' END
    FROM ranked WHERE dag_runs.id = ranked.id
    """
)
_RUNNING = sa.text("UPDATE backfills SET state = 'running' WHERE id = :backfill_id")


def measure(home: Path) -> dict[str, Any]:
    with stack.pg_database() as db_url:
        settings = stack.bench_settings(db_url, "redis://127.0.0.1:6379/0", home)
        commands = Commands(stack.user_env(settings), home / "logs")
        backfill_id = _create(commands)
        engine = create_engine_for(db_url)
        try:
            _paint(engine, backfill_id)
        finally:
            engine.dispose()
        baselines = _baselines(commands, backfill_id)
        with _serving(commands, home) as url:
            api = _api(url, backfill_id)
            browser = _browser(url, backfill_id, home / "web-grid.png")
    return {"dates": DATES, "tasks": TASKS, **api, **browser, **baselines}


def _create(commands: Commands) -> int:
    ran = commands.run(
        "web-create", "backfill", "create", DAG_ID, "-s", RANGE[0], "-e", RANGE[1],
        timeout=300, stdout=Stdout.CAPTURE,
    )  # fmt: skip
    if ran.exit_code != 0:
        raise BenchError(f"web: {ran.describe()}")
    return int(ran.stdout.split()[-1])


def _paint(engine: sa.Engine, backfill_id: int) -> None:
    params = {"backfill_id": backfill_id, "ended": ENDED, "running": RUNNING}
    with engine.begin() as conn:
        conn.execute(sa.text("SET LOCAL session_replication_role = replica"))
        conn.execute(_PAINT_TIS, params)
        conn.execute(_PAINT_RUNS, params)
        conn.execute(_RUNNING, params)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE task_instances"))
        conn.execute(sa.text("VACUUM ANALYZE dag_runs"))


def _baselines(commands: Commands, backfill_id: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, argv in (
        ("status", ("status", str(backfill_id), "-o", "json")),
        ("tasks", ("tasks", str(backfill_id), "-o", "json", "--limit", "0")),
    ):
        ran = commands.run(f"web-{name}", "backfill", *argv, timeout=300)
        if ran.exit_code != 0:
            raise BenchError(f"web: {ran.describe()}")
        out[f"cli_{name}_seconds"] = ran.seconds
    return out


class _serving:
    """`backfill web --port 0` with the bench's settings, until the block ends."""

    def __init__(self, commands: Commands, home: Path) -> None:
        self.env = {**commands.prepare("web-server"), "BACKFILL_API_TOKEN": TOKEN}
        self.log = home / "logs" / "web-server.log"

    def __enter__(self) -> str:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "backfill.cli", "web", "--port", "0"]
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                argv, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 60
        while not (found := _LISTENING.search(self.log.read_text(errors="replace"))):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise BenchError(f"web: `backfill web` did not start; see {self.log}")
            time.sleep(0.1)
        return f"http://127.0.0.1:{found.group(1)}"

    def __exit__(self, *_exc: object) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def _api(url: str, backfill_id: int) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {TOKEN}", "Accept-Encoding": "gzip"}
    seconds, raw, packed = [], 0, 0
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        for _ in range(REQUESTS):
            began = time.perf_counter()
            response = client.get(f"/api/v1/backfills/{backfill_id}/grid")
            seconds.append(time.perf_counter() - began)
            response.raise_for_status()
            raw = len(response.content)
            packed = len(gzip.compress(response.content))
            cells = sum(len(row) for row in response.json()["cells"])
    if cells != DATES * TASKS:
        raise BenchError(f"web: the grid has {cells} cells, not {DATES * TASKS}")
    return {
        "grid_api_median_seconds": statistics.median(seconds),
        "grid_api_max_seconds": max(seconds),
        "grid_json_bytes": raw,
        "grid_json_gzip_bytes": packed,
    }


def _browser(url: str, backfill_id: int, shot: Path) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        context = browser.new_context(
            viewport={"width": 1400, "height": 1000},
            extra_http_headers={"Authorization": f"Bearer {TOKEN}"},
        )
        page = context.new_page()
        page.goto(f"{url}/backfills/{backfill_id}")
        page.wait_for_function("window.backfillGrid?.loads >= 2", timeout=WAIT)
        grid = page.evaluate(
            "(({firstDrawAt, lastLoadMs, lastDrawMs}) => ({firstDrawAt, lastLoadMs, lastDrawMs}))"
            "(window.backfillGrid)"
        )
        page.evaluate("document.getElementById('grid-scroll').scrollTop = 8000")
        page.wait_for_function("window.backfillGrid.first > 400", timeout=WAIT)
        scrolled = page.evaluate("window.backfillGrid.lastDrawMs")
        page.evaluate("document.getElementById('grid-scroll').scrollTop = 11000")
        page.wait_for_function("window.backfillGrid.first > 600", timeout=WAIT)
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=shot, full_page=True)
        browser.close()
    return {
        "page_first_grid_ms": grid["firstDrawAt"],
        "poll_fetch_parse_ms": grid["lastLoadMs"],
        "redraw_ms": grid["lastDrawMs"],
        "scrolled_redraw_ms": scrolled,
        "screenshot": str(shot),
    }
