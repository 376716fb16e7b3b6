"""What every row of the fault matrix shares: sizes, dates, the admin URL, deadlines."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date, timedelta

PG_ADMIN_URL = os.environ.get(
    "BACKFILL_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
START = "2016-01-01"
TASKS = 10  # per date, in every chaos DAG (tests/dags_chaos/chaos.py)
# Seconds: a try is reaped after 4 s of silence; a beat every 0.5 s gives a live
# worker 8 chances a timeout; a lost message is re-sent after 6 s.
TIMEOUTS = {"heartbeat_interval": 0.5, "heartbeat_timeout": 4.0, "queued_timeout": 6.0}


@dataclass(frozen=True)
class Size:
    """How big a row's backfill is: `dates` daily runs of ten tasks each."""

    dates: int
    deadline: float  # seconds from launch to the final state

    @property
    def end(self) -> str:
        return (date.fromisoformat(START) + timedelta(days=self.dates - 1)).isoformat()

    @property
    def tis(self) -> int:
        return self.dates * TASKS


FULL = Size(dates=100, deadline=180.0)  # 1,000 TIs a row
QUICK = Size(dates=15, deadline=90.0)  # 150 TIs a row (`--quick`, tests/integration/test_chaos.py)
SMALL = Size(dates=3, deadline=90.0)  # rows that can only be seen once
VISIBILITY_TIMEOUT = 2  # seconds (chaos/visibility.py); chaos_long's `t9` runs 4 s
