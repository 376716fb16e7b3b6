"""The browser harness itself (tests/support/browser.py), on a page of our own served
from a local `http.server` thread: Chromium starts, loads it, runs its JavaScript on a
click, and the screenshot helper writes a PNG of it.

The page's text changes only in its script, so the first test fails if the script did
not run; the second loads the same page with JavaScript off and shows that then it
does not change (the first test's wait is on something the script alone does).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from threading import Thread
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect
from support.browser import SCREENSHOTS, screenshot

PAGE = """<!doctype html>
<html>
<head><title>harness</title></head>
<body>
  <p id="status">waiting</p>
  <button type="button" id="go">Go</button>
  <script>
    document.getElementById("go").addEventListener("click", () => {
      document.getElementById("status").textContent = ["clicked", 6 * 7].join(" ");
    });
  </script>
</body>
</html>
"""
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request on stderr says nothing a failing test needs


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of PAGE, served on 127.0.0.1 by a thread until the module ends."""
    folder = tmp_path_factory.mktemp("site")
    (folder / "index.html").write_text(PAGE)

    def handler(*args: Any) -> _QuietHandler:
        return _QuietHandler(*args, directory=str(folder))

    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = Thread(target=server.serve_forever, name="site", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/index.html"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_click_runs_the_page_script_and_the_screenshot_is_a_png(page: Page, site: str) -> None:
    page.goto(site)
    status = page.locator("#status")
    expect(status).to_have_text("waiting")

    page.get_by_role("button", name="Go").click()

    expect(status).to_have_text("clicked 42")
    path = screenshot(page, "test_browser_harness")
    assert path == SCREENSHOTS / "test_browser_harness.png"
    header = path.read_bytes()[:24]
    assert header[:8] == PNG_SIGNATURE
    width, height = struct.unpack(">II", header[16:24])  # the IHDR chunk
    assert page.viewport_size is not None
    assert width == page.viewport_size["width"]
    assert height >= page.viewport_size["height"]


def test_without_javascript_the_click_changes_nothing(browser: Browser, site: str) -> None:
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        page.goto(site)
        page.get_by_role("button", name="Go").click()
        # No script can run: nothing is pending, so reading the text now is not a race.
        assert page.locator("#status").text_content() == "waiting"
    finally:
        context.close()


def test_screenshot_names_are_file_names(page: Page, site: str) -> None:
    page.goto(site)
    path = screenshot(page, "tests/web/test x.py::case[1]")
    assert path.parent == SCREENSHOTS
    assert path.name == "tests_web_test_x.py__case_1_.png"
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    path.unlink()
