"""The browser harness of the web-page tests: Playwright driving Debian's Chromium.

Registered for every test by the root conftest (`pytest_plugins`):

- `browser` (module-scoped): a headless Chromium at BACKFILL_TEST_CHROMIUM
  (default /usr/bin/chromium, Debian's `chromium` package), driven through
  Playwright's `executable_path`. Playwright's own browser download
  (`playwright install`) is never used. If Playwright or Chromium cannot
  start, the test is skipped on a laptop and FAILS when CI is set.
- `page`: a fresh context and page of the test's own, closed after it, with
  generous timeouts (`TIMEOUT_MS`) for actions, navigations and `expect`.
  When the test failed, it leaves a screenshot (see below) named after the test
  and prints the page's uncaught script errors.
- `screenshot(page, name)`: a full-page PNG at `.backfill/screenshots/<name>.png`
  of the project root; returns its path.

Module scope, not session: the driver (a Node process) and Chromium live only
while a module of browser tests runs, not beside the worker-heavy tests after
it on 2 shared cores. A launch costs under a second.

Playwright is imported inside the fixtures: without it installed, the browser
tests skip (or fail in CI) and every other test still runs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = os.environ.get("BACKFILL_TEST_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / ".backfill" / "screenshots"
# Generous, for actions, navigations and `expect` alike (whose own default is 5 s): a
# shared CI machine with 2 cores runs workers and databases beside the browser.
TIMEOUT_MS = 30_000

_failed = pytest.StashKey[bool]()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """A headless Chromium at CHROMIUM, shared by the module's tests, closed after them."""
    try:
        from playwright.sync_api import Error, expect, sync_playwright
    except ImportError as exc:
        _unavailable(f"Playwright is not installed ({exc}); run `make install`")
    expect.set_options(timeout=TIMEOUT_MS)
    playwright = sync_playwright().start()
    try:
        try:
            # chromium_sandbox=False is --no-sandbox: Chromium refuses to start as root
            # with its sandbox (containers, CI), and the pages it loads are our own.
            launched = playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, chromium_sandbox=False
            )
        except Error as exc:
            _unavailable(
                f"Chromium at {CHROMIUM} does not start ({_first_line(exc)}); "
                "apt-get install chromium, or point BACKFILL_TEST_CHROMIUM at a Chromium"
            )
        yield launched
        launched.close()
    finally:
        playwright.stop()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A page in a fresh context (no cookies or storage from another test), closed after
    the test; a screenshot named after the test when it failed."""
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    context.set_default_navigation_timeout(TIMEOUT_MS)
    try:
        opened = context.new_page()
        errors: list[str] = []  # the page's uncaught script errors, told if the test fails
        opened.on("pageerror", lambda error: errors.append(f"{error.name}: {error.message}"))
        yield opened
        if request.node.stash.get(_failed, False):
            _leave_screenshot(opened, request.node.name)
            print("uncaught script errors of the page:", *errors or ["none"], sep="\n  ")
    finally:
        context.close()


def screenshot(page: Page, name: str) -> Path:
    """Save a full-page PNG of `page` as `.backfill/screenshots/<name>.png` (any character
    of `name` unsafe in a file name becomes `_`; an older one is replaced); its path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{re.sub(r'[^A-Za-z0-9._-]', '_', name)}.png"
    page.screenshot(path=path, full_page=True)
    return path


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item,
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    # The `page` fixture's teardown reads whether the test's call failed.
    report = yield
    if report.when == "call" and report.failed:
        item.stash[_failed] = True
    return report


def _leave_screenshot(page: Page, name: str) -> None:
    """The failed test's screenshot, if the page can still take one: the failure is
    the test's to report, not its teardown's."""
    from playwright.sync_api import Error

    try:
        print(f"screenshot of the failed test: {screenshot(page, name)}")
    except Error as exc:
        print(f"no screenshot of the failed test ({_first_line(exc)})")


def _unavailable(message: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"{message}. CI is set: browser tests must not be skipped", False)
    pytest.skip(message)


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
