"""`python -m chaos [--quick] [--only row,row]`: run the fault matrix, print its table,
write it to .backfill/chaos.json; exit 1 if any row broke a promise or could not prove
its fault, 0 otherwise."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

from .catalog import ROWS, select
from .matrix import run_row
from .report import JSON_PATH, Result, show, write_json
from .scene import Template
from .settings import FULL, QUICK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="every row at a small size")
    keys = ", ".join(row.key for row in ROWS)
    parser.add_argument("--only", default="", help=f"comma-separated rows of: {keys}")
    parser.add_argument("--json", type=Path, default=JSON_PATH, help="where the report goes")
    args = parser.parse_args(argv)
    try:
        rows = select(args.only)
    except KeyError as exc:
        parser.error(str(exc.args[0]))
    size = QUICK if args.quick else FULL
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)  # the table's 8 columns, in a log file too
    folder = Path(tempfile.mkdtemp(prefix="backfill-chaos-"))
    console.print(f"fault matrix: {len(rows)} rows, {size.tis} TIs each; logs in {folder}")
    template = Template()
    results: list[Result] = []
    began = time.monotonic()
    try:
        for number, row in enumerate(rows, 1):
            console.print(f"[{number}/{len(rows)}] {row.fault} ...")
            started = time.monotonic()
            result = run_row(row, size, template, folder)
            results.append(result)
            took = time.monotonic() - started
            verdict = f"{result.verdict}: {result.why}" if result.why else result.verdict
            console.print(f"[{number}/{len(rows)}] {row.fault}: {verdict} ({took:.0f}s)")
    finally:
        template.drop()
    minutes = (time.monotonic() - began) / 60
    show(results, f"fault matrix ({'quick' if args.quick else 'full'}, {minutes:.1f} min)", console)
    write_json(results, args.json, size="quick" if args.quick else "full")
    console.print(f"report: {args.json}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
