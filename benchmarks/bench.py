"""`make bench`: what users run, measured against raw Celery on the same broker and workers.

    python -m benchmarks.bench [--quick] [--only a,b,c,d,e,embedded,w]    (from the project root)

Every scenario is driven by the command a user types (`backfill run`, or
`backfill create` then `backfill coordinator`), in a process of its own
(`benchmarks.counted`: its SQL statements and peak RSS), on the servers of
`benchmarks.stack`: a fresh PostgreSQL database per run (one for (a)-(d), one
for (e)), a private Redis DB index, and the bench's own `celery worker`s:
- (a)-(d) (`benchmarks.shapes`) on each worker shape - one `celery worker -c 2`,
  then two `-c 1` - each against raw Celery no-ops on that same shape;
- the embedded default, SQLite + `filesystem://` (`benchmarks.embedded`);
- (e) the 439,200-TI scale scenario (`benchmarks.scale`), and the coordinator's
  pass time at 1k and 10k active TIs (`benchmarks.passtime`);
- py-spy profiles of the slowest scenario (`benchmarks.profiles`);
- (w) the web page's grid at 1,000 dates x 50 tasks (`benchmarks.web`).
`--quick` (`make bench-quick`): (a), (b), (d) at smaller sizes, one shape.
Prints every figure with its target and writes them to `.backfill/bench.json`;
the logs of the last run are in `.backfill/bench/logs/`, the profiles in
`.backfill/bench/profiles/`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis

from backfill.client.errors import LocalWorkersError
from backfill.store.db import create_engine_for
from benchmarks import embedded, environment, passtime, profiles, report, scale, shapes, stack, web
from benchmarks.commands import Commands
from benchmarks.fleet import Shape
from benchmarks.phases import BenchError, Calendar, Stage
from workers.app import make_app

ROOT = Path(".backfill")
HOME = ROOT / "bench"
SHAPES = (Shape(count=1, concurrency=2), Shape(count=2, concurrency=1))
ALL = frozenset({"a", "b", "c", "d", "e", "embedded", "w"})
QUICK = frozenset({"a", "b", "d"})


@contextmanager
def server_stage(redis_url: str, client: redis.Redis) -> Iterator[Stage]:
    """A stage on a fresh PostgreSQL database and the bench's Redis index."""
    with stack.pg_database() as db_url:
        settings = stack.bench_settings(db_url, redis_url, HOME)
        engine = create_engine_for(db_url)
        app = make_app(settings)
        commands = Commands(stack.user_env(settings), HOME / "logs")
        try:
            yield Stage(settings, commands, engine, client, redis_url, app, Calendar())
        finally:
            app.close()
            engine.dispose()


def measure(only: frozenset[str], *, quick: bool) -> dict[str, Any]:
    sizes = shapes.QUICK if quick else shapes.FULL
    results: dict[str, Any] = {"quick": quick, "only": sorted(only)}
    with stack.redis_index() as (redis_url, client):
        results["environment"] = environment.describe(client)
        if only & {"a", "b", "c", "d"}:
            with server_stage(redis_url, client) as stage:
                series = [
                    shapes.measure(stage, s, sizes, only) for s in SHAPES[: 1 if quick else 2]
                ]
                results["shapes"] = series
                results["profiles"] = profiles.slowest(stage, series, sizes, HOME / "profiles")
        if "embedded" in only:
            embedded_sizes = embedded.QUICK if quick else embedded.FULL
            results["embedded"] = embedded.measure(HOME, redis_url, client, embedded_sizes)
        if "e" in only:
            with server_stage(redis_url, client) as stage:
                results["scale"] = scale.measure(stage, SHAPES[0])
                results["pass_time"] = passtime.measure(stage)
    if "w" in only:
        results["web"] = web.measure(HOME)
    results["environment"]["load_average_at_end"] = os.getloadavg()
    return results


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="(a), (b), (d), smaller, one shape")
    parser.add_argument(
        "--only", metavar="LIST", help=f"comma-separated subset of {','.join(sorted(ALL))}"
    )
    args = parser.parse_args(argv)
    only = frozenset(args.only.split(",")) if args.only else (QUICK if args.quick else ALL)
    if only - ALL:
        parser.error(f"--only: unknown {','.join(sorted(only - ALL))}; choose from {sorted(ALL)}")
    args.selected = only
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    shutil.rmtree(HOME / "logs", ignore_errors=True)  # the last run's logs
    try:
        results = measure(args.selected, quick=args.quick)
    except (stack.BenchSetupError, BenchError, LocalWorkersError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    figures = report.figures(results)
    print(report.table(figures, results["environment"]))
    out = ROOT / "bench.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**results, "figures": figures}, indent=2, default=str) + "\n")
    print(f"figures written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
