"""The pages in a real browser, as an operator uses them: headless Chromium (Playwright,
`support/browser.py`) on a real `backfill web`, with a `backfill coordinator` daemon,
a `celery worker`, PostgreSQL and Redis behind it.

The operator logs in with the token, finds the backfill in the list, opens its grid,
sees cells turn from running to success and to failed as the workers finish TIs
(read back from the canvas's pixels: the colour the operator sees), clicks a red
cell, reads the failed try's error and log, clears it (and its downstream) from
the page, and sees it run again and succeed; the grid then shows it green. The
grid's screenshot is left at `.backfill/screenshots/grid.png`.
"""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Page, expect
from support.browser import screenshot
from support.ledger import Key
from support.private_redis import PrivateRedis
from support.processes import Coordinators, WorkerPool
from support.stack import Stack, utc
from support.web import WebServers

TOKEN = "browser-test-token"
DAG_ID = "web_grid"
DATES = ["2016-01-01", "2016-01-02", "2016-01-03", "2016-01-04"]
FLAKY_ERROR = "flaky: the first try of every date fails"  # tests/dags_integration/web.py
TIMEOUTS = {"heartbeat_interval": 0.5, "heartbeat_timeout": 15.0, "queued_timeout": 15.0}
WAIT_MS = 60_000  # a backfill's turn on a loaded CI machine


def iso(day: str) -> str:
    return f"{day}T00:00:00+00:00"


def gate(day: str) -> Key:
    return (DAG_ID, "extract", utc(day), 1)


def wait_for_cell(page: Page, task: str, day: str, state: str) -> None:
    """Until the grid draws `task` on `day` in `state`'s colour."""
    page.wait_for_function(
        """([task, date, state]) => {
            const grid = window.backfillGrid;
            return grid && grid.loads > 0 && grid.pixel(task, date) === grid.colour(state);
        }""",
        arg=[task, iso(day), state],
        timeout=WAIT_MS,
    )


def test_an_operator_watches_a_backfill_clears_a_failed_ti_and_sees_it_run_again(
    pg_url: str,
    broker: PrivateRedis,
    *,
    tmp_path: Path,
    workers: WorkerPool,
    coordinators: Coordinators,
    web_servers: WebServers,
    page: Page,
) -> None:
    stack = Stack.create(pg_url, broker, tmp_path).with_timeouts(**TIMEOUTS)
    workers.start(stack, 1, concurrency=4)
    coordinators.cli(stack, "coordinator")
    # Each date on its own: a failed date does not stop the others, nor the cleared one.
    created = coordinators.cli(
        stack, "create", DAG_ID, "-s", DATES[0], "-e", DATES[-1], "--continue-on-failures"
    )
    done = created.finish(60)
    assert done.code == 0, done.log
    backfill_id = int(done.stdout)
    server = web_servers.start(stack.env(), token=TOKEN)

    # Log in; the list shows the backfill, a click opens its grid.
    page.goto(server.url + "/")
    expect(page).to_have_url(server.url + "/login?next=/")
    page.fill('input[name="token"]', TOKEN)
    page.click('button[type="submit"]')
    row = page.locator(f'#backfill-rows tr[data-id="{backfill_id}"]')
    expect(row).to_contain_text(DAG_ID)
    row.locator("a").first.click()
    expect(page).to_have_url(f"{server.url}/backfills/{backfill_id}")

    # Every extract is running (held at its gate); then the workers finish them.
    for day in DATES:
        wait_for_cell(page, "extract", day, "running")
    expect(page.locator("#state")).to_have_text("running")
    for day in DATES:
        stack.open_gate(gate(day))
    for day in DATES:
        wait_for_cell(page, "extract", day, "success")
        wait_for_cell(page, "flaky", day, "failed")
        wait_for_cell(page, "load", day, "upstream_failed")
    expect(page.locator("#state")).to_have_text("failed", timeout=WAIT_MS)
    expect(page.locator("#failed-rows")).to_contain_text(FLAKY_ERROR)

    # Click the red cell of the first date: its TI page shows the error and the log.
    where = page.evaluate(
        "([task, date]) => window.backfillGrid.where(task, date)", ["flaky", iso(DATES[0])]
    )
    page.mouse.click(where["x"], where["y"])
    expect(page).to_have_url(f"{server.url}/backfills/{backfill_id}/tasks/flaky/{iso(DATES[0])}")
    expect(page.locator("#ti-state")).to_have_text("failed")
    expect(page.locator("#ti-error")).to_contain_text(FLAKY_ERROR)
    expect(page.locator("#log")).to_contain_text(f"flaky {DATES[0]} try 1")

    # Clear it and its downstream from the page; the daemon runs them again.
    page.check("#clear-downstream")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#btn-clear-ti")
    expect(page.locator("#ti-state")).to_have_text("success", timeout=WAIT_MS)
    expect(page.locator("#tries tr")).to_have_count(2)
    expect(page.locator("#log")).to_contain_text(f"flaky {DATES[0]} try 2")

    # Back on the grid, the cleared date is green; the other dates stay red.
    page.goto(f"{server.url}/backfills/{backfill_id}")
    wait_for_cell(page, "flaky", DATES[0], "success")
    wait_for_cell(page, "load", DATES[0], "success")
    wait_for_cell(page, "flaky", DATES[1], "failed")
    expect(page.locator("#state")).to_have_text("failed", timeout=WAIT_MS)
    shot = screenshot(page, "grid")
    assert shot.read_bytes().startswith(b"\x89PNG")


def test_a_mapped_task_s_cell_counts_its_tis_and_opens_the_failed_one(
    pg_url: str,
    broker: PrivateRedis,
    *,
    tmp_path: Path,
    workers: WorkerPool,
    coordinators: Coordinators,
    web_servers: WebServers,
    page: Page,
) -> None:
    """`mapping_flow` without retries: `double` maps over [1, 2, 3] on the first date and
    its x=2 fails; over [] on the second (skipped). Its cell is red, marked, and counts
    its TIs; a click opens the failed one, whose page links to its siblings. Screenshots
    of the grid and that page are left at `.backfill/screenshots/{grid,ti}_mapped.png`."""
    stack = Stack.create(pg_url, broker, tmp_path).with_timeouts(**TIMEOUTS)
    workers.start(stack, 1, concurrency=4)
    coordinators.cli(stack, "coordinator")
    days = ("2024-01-01", "2024-01-02")
    options = ("--disable-retry", "--continue-on-failures")
    created = coordinators.cli(
        stack, "create", "mapping_flow", "-s", days[0], "-e", days[1], *options
    )
    done = created.finish(60)
    assert done.code == 0, done.log
    backfill_id = int(done.stdout)
    server = web_servers.start(stack.env(), token=TOKEN)

    page.goto(f"{server.url}/login?next=/backfills/{backfill_id}")
    page.fill('input[name="token"]', TOKEN)
    page.click('button[type="submit"]')
    expect(page.locator("#state")).to_have_text("failed", timeout=WAIT_MS)
    wait_for_cell(page, "double", days[0], "failed")
    wait_for_cell(page, "double", days[1], "skipped")
    where = page.evaluate(
        "([task, date]) => window.backfillGrid.where(task, date)", ["double", iso(days[0])]
    )
    page.mouse.move(where["x"], where["y"])
    expect(page.locator("#tip")).to_have_text(
        f"double · {days[0]} 00:00:00Z · 3 mapped — 1 failed, 2 success"
    )
    shot = screenshot(page, "grid_mapped")
    assert shot.read_bytes().startswith(b"\x89PNG")

    page.mouse.click(where["x"], where["y"])
    url = f"{server.url}/backfills/{backfill_id}/tasks/double/{iso(days[0])}?map_index=1"
    expect(page).to_have_url(url)
    expect(page.locator("h1")).to_contain_text("double[1]")
    expect(page.locator("#ti-state")).to_have_text("failed")
    expect(page.locator("#ti-error")).to_contain_text("the first try of x=2 fails")
    expect(page.locator("#sibling-links a")).to_have_text(["0", "1", "2"])
    screenshot(page, "ti_mapped")
    page.locator("#sibling-links a", has_text="2").click()
    expect(page.locator("h1")).to_contain_text("double[2]")
    expect(page.locator("#ti-state")).to_have_text("success")
    expect(page.locator("#ti-result")).to_have_text("6")  # x=3, doubled
