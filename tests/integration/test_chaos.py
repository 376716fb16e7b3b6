"""The fault matrix's quick subset (`make chaos` runs it all, at 1,000 TIs a row):
three representative rows at 150 TIs each, through the same code (`chaos.matrix`).

- a worker SIGKILLed three times mid-try: its tries reaped and retried;
- every message published twice: every second copy refused at its claim;
- a coordinator SIGKILLed right after a publish: a standby takes over, and the
  published batch is neither lost nor run twice.

Each must end with no try started twice, no TI lost, and its backfill in its
final state before the deadline, the fault's own evidence seen.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from chaos.catalog import select
from chaos.matrix import Row, run_row
from chaos.scene import Template
from chaos.settings import QUICK

ROWS = select("worker-sigkill,published-twice,coordinator-kill-after")


@pytest.fixture(scope="module")
def template(_pg_admin: Engine) -> Iterator[Template]:
    """The migrated template each row's database copies (PostgreSQL missing: skipped on
    a laptop, failed in CI, by `_pg_admin`)."""
    made = Template()
    yield made
    made.drop()


@pytest.mark.parametrize("row", ROWS, ids=[row.key for row in ROWS])
def test_a_fault_loses_nothing_and_runs_nothing_twice(
    row: Row, template: Template, tmp_path: Path
) -> None:
    result = run_row(row, QUICK, template, tmp_path)
    if result.error and result.error.startswith("Skipped"):
        pytest.skip(result.error)
    assert result.error is None, (tmp_path / f"{result.key}.error").read_text()
    assert result.tally is not None
    assert result.tally.tis >= QUICK.tis
    assert result.tally.twice == 0, result
    assert result.tally.lost == 0, result
    assert result.tally.seconds is not None, f"no final state within {QUICK.deadline:g}s"
    assert all(result.checks.values()), result.checks
    assert result.ok, result.why
