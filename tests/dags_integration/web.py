"""The DAG of the browser tests (tests/web/test_browser.py).

- `web_grid`: per date, `extract` blocks until the test opens its gate, then
  `flaky` fails its first try with a clear error (it has no retries), and
  `load` runs after it. So a test sees cells running, then red, clears a red
  one from the page, and sees it run again and succeed.

Every callable appends to the test's execution ledger (see `_support.py`).
"""

from __future__ import annotations

import _support as support  # beside this file: the DAGs folder is importable
import pendulum

from backfill import DAG, Context

START = pendulum.datetime(2016, 1, 1, tz="UTC")
FLAKY_ERROR = "flaky: the first try of every date fails"


def extract(ctx: Context) -> None:
    support.gated(ctx)


def flaky(ctx: Context) -> None:
    support.record("start", ctx)
    print(f"flaky {ctx.ds} try {ctx.try_number}")
    if ctx.try_number == 1:
        raise RuntimeError(FLAKY_ERROR)
    support.record("end", ctx)


def load(ctx: Context) -> None:
    support.timed(ctx, 0.0, 0.01)


web_grid = DAG("web_grid", schedule="@daily", start_date=START)
_extract = web_grid.add_task("extract", extract)
_flaky = web_grid.add_task("flaky", flaky)
_load = web_grid.add_task("load", load)
_extract >> _flaky >> _load
