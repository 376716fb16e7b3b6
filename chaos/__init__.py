"""The fault matrix (`python -m chaos`, `make chaos`): every fault against real processes.

Each row (`chaos.rows_*`) runs a backfill of 1,000 TIs (a small one for faults
seen once per backfill) on its own PostgreSQL database and broker, with real
`celery worker` processes and coordinator processes, strikes its fault mid-run
and reads back from the store's tables and the execution ledger: redeliveries
seen, tries started twice (must be 0), TIs lost (must be 0), stale writes
refused, time to the final state (`chaos.evidence`). Test tooling, like tests/:
it reuses the harness of tests/support and tests/integration.
"""

import sys
from pathlib import Path

# The harness lives in tests/ (`support`, `integration`), as pytest finds it there.
TESTS = str(Path(__file__).resolve().parents[1] / "tests")
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)
