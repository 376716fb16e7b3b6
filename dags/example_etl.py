"""A small, self-contained ETL: extract -> transform one table each -> load -> report.

    extract ─┬─> transform_orders  ─┐
             ├─> transform_refunds ─┼─> load ─> report
             └─> transform_signups ─┘

Runs daily at 03:00 Amsterdam time; `ds` is the local date. Every file lives
under `$BACKFILL_HOME/etl_demo/<ds>/` (default `./.backfill`), so one logical
date never touches another's data and a re-run overwrites its own output.
No network: `extract` makes rows deterministically from the logical date, as
if a source system had them. Files are written whole or not at all (write to
a temporary name, then rename), so a killed try leaves nothing half-written.

Needs the `etl_db` pool, which `load` takes 2 slots of:

    backfill pools set etl_db 4

Run options through `--conf`: `{"fail_first_try": true}` makes `extract` fail
its first try (a flaky source) to show retries with exponential backoff;
`{"skip_report": true}` makes `report` end `skipped`.
"""

from __future__ import annotations

import json
import os
import random
from collections import defaultdict
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum

from backfill import DAG, Context, Skip

TABLES = ("orders", "refunds", "signups")
REGIONS = ("north", "east", "south", "west")

dag = DAG(
    "example_etl",
    schedule="0 3 * * *",
    start_date=pendulum.datetime(2024, 1, 1, tz="Europe/Amsterdam"),
    max_active_runs=4,
    default_args={"retries": 1, "retry_delay": timedelta(seconds=10)},
    description="Extract three tables, aggregate them per region, load and report.",
)


def workdir(ctx: Context) -> Path:
    """This logical date's folder; read when the task runs, so workers honour their env."""
    home = Path(os.environ.get("BACKFILL_HOME") or ".backfill")
    return home / "etl_demo" / ctx.ds


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)  # atomic on POSIX: readers see the old file or the new, never a part


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def source_rows(ds: str, table: str) -> list[dict[str, Any]]:
    """The rows a source system would hold for `table` on `ds`: the same every time."""
    rng = random.Random(f"{ds}/{table}")  # str seeds do not depend on PYTHONHASHSEED
    return [
        {"id": f"{table}-{ds}-{n}", "region": rng.choice(REGIONS), "amount": rng.randint(1, 500)}
        for n in range(rng.randint(5, 20))
    ]


@dag.task(
    retries=2,
    retry_delay=timedelta(seconds=2),
    retry_exponential_backoff=True,
    max_retry_delay=timedelta(seconds=30),
    execution_timeout=timedelta(minutes=5),
)
def extract(ctx: Context) -> None:
    if ctx.conf.get("fail_first_try") and ctx.try_number == 1:
        raise ConnectionError("source unavailable (simulated by conf fail_first_try)")
    for table in TABLES:
        rows = source_rows(ctx.ds, table)
        write_json(workdir(ctx) / "raw" / f"{table}.json", rows)
        print(f"extract: {len(rows)} {table} rows for {ctx.ds}")


def make_transform(table: str) -> Callable[[Context], None]:
    def transform(ctx: Context) -> None:
        per_region: dict[str, dict[str, int]] = defaultdict(lambda: {"rows": 0, "amount": 0})
        for row in read_json(workdir(ctx) / "raw" / f"{table}.json"):
            per_region[row["region"]]["rows"] += 1
            per_region[row["region"]]["amount"] += row["amount"]
        write_json(workdir(ctx) / "transformed" / f"{table}.json", dict(sorted(per_region.items())))
        print(f"transform_{table}: {len(per_region)} regions")

    return transform


transforms = [dag.task(task_id=f"transform_{table}")(make_transform(table)) for table in TABLES]


@dag.task(pool="etl_db", pool_slots=2, priority_weight=10)
def load(ctx: Context) -> None:
    """Combine the tables into one result, as a warehouse load would."""
    tables = {t: read_json(workdir(ctx) / "transformed" / f"{t}.json") for t in TABLES}
    result = {
        "ds": ctx.ds,
        "logical_date": ctx.logical_date.isoformat(),
        "run_id": ctx.run_id,
        "tables": tables,
        "totals": {
            t: {
                "rows": sum(r["rows"] for r in regions.values()),
                "amount": sum(r["amount"] for r in regions.values()),
            }
            for t, regions in tables.items()
        },
    }
    write_json(workdir(ctx) / "result.json", result)
    print(f"load: wrote {workdir(ctx) / 'result.json'}")


@dag.task(trigger_rule="all_success")
def report(ctx: Context) -> None:
    if ctx.conf.get("skip_report"):
        raise Skip("report skipped by conf skip_report")
    totals = read_json(workdir(ctx) / "result.json")["totals"]
    lines = [f"{t:>8}: {v['rows']:3d} rows, amount {v['amount']:6d}" for t, v in totals.items()]
    print(f"ETL report for {ctx.ds}\n" + "\n".join(lines))


extract >> transforms >> load >> report
