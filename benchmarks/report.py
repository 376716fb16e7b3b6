"""The bench's figures: each with its target and whether it was met, printed and kept as JSON.

Invariants:
- one list of `figure` records is both the printed table and the `figures`
  of `.backfill/bench.json`, so the two always say the same thing;
- a figure without a target is reported for information (`met` None); one
  whose measurement failed or timed out has value None and is not met;
- sizes are MB (10^6 bytes), as the targets are written;
- (e)'s figures are `benchmarks.report_scale`'s.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks import environment, report_scale
from benchmarks.figure import Figure, figure

RATIO = 0.5  # (a)-(c) TI/s over raw Celery no-op task/s, at least, on every shape
EMBEDDED_RATIO = 0.3  # (a) on the embedded default
CHAIN_MEAN_MS, CHAIN_P99_MS = 15.0, 40.0  # with one worker -c 2
CHAIN_SHAPE = "1x2"
STATEMENTS_PER_TRY = 3.0
# (w): an operator's page is usable at once, and a scroll never stutters (one frame).
WEB_GRID_SECONDS, WEB_FIRST_GRID_SECONDS, WEB_REDRAW_MS = 0.5, 2.0, 16.0
NAMES = {"a": "(a) wide", "b": "(b) fan-out/in", "c": "(c) layered"}


def figures(results: dict[str, Any]) -> list[Figure]:
    rows: list[Figure] = []
    for series in results.get("shapes", []):
        rows += _shape(series)
    if "embedded" in results:
        rows += _embedded(results["embedded"])
    if "scale" in results:
        rows += report_scale.figures(results["scale"], results.get("pass_time", {}))
    if "web" in results:
        rows += _web(results["web"])
    return rows


def _web(w: dict[str, Any]) -> list[Figure]:
    size = f"{w['dates']:,} dates x {w['tasks']} tasks"
    baseline = f"`backfill status -o json` {w['cli_status_seconds']:.2f}s"
    every = f"`backfill tasks --limit 0 -o json` {w['cli_tasks_seconds']:.2f}s"
    kb = f"{w['grid_json_bytes'] / 1e3:.0f} kB, gzip {w['grid_json_gzip_bytes'] / 1e3:.0f} kB"
    return [
        figure(
            "w.grid_api",
            f"(w) grid JSON, {size}: median of 10",
            w["grid_api_median_seconds"],
            "s",
            at_most=WEB_GRID_SECONDS,
            detail=f"max {w['grid_api_max_seconds']:.3f}s; {kb}; {baseline}, {every}",
        ),
        figure(
            "w.first_grid",
            f"(w) page open to grid drawn, {size} (Chromium)",
            w["page_first_grid_ms"] / 1e3,
            "s",
            at_most=WEB_FIRST_GRID_SECONDS,
            detail=f"poll fetch+parse {w['poll_fetch_parse_ms']:.0f}ms",
        ),
        figure(
            "w.redraw",
            "(w) grid redraw of the rows in view, after a scroll",
            w["scrolled_redraw_ms"],
            "ms",
            at_most=WEB_REDRAW_MS,
            detail=f"in place {w['redraw_ms']:.1f}ms",
        ),
    ]


def _shape(s: dict[str, Any]) -> list[Figure]:
    name, raw = s["shape"], s["raw_celery_per_second"]
    rows = []
    for key, label in NAMES.items():
        if key in s:
            r = s[key]
            rows.append(
                figure(
                    f"{key}.{name}.ratio",
                    f"{label} {r['task_instances']} TIs, {s['workers']}: TI/s / raw",
                    r["ratio"],
                    "x",
                    at_least=RATIO,
                    detail=_rates(r, f"raw {raw:.0f}/s"),
                )
            )
    if "d" in s:
        rows += _chain(name, s["d"])
    if "sql" in s:
        q = s["sql"]
        rows.append(
            figure(
                f"sql.{name}",
                f"SQL statements per TI try over (a), {s['workers']}",
                q["statements_per_try"],
                "",
                at_most=STATEMENTS_PER_TRY,
                detail=f"command {q['coordinator_per_try']:.2f} + workers "
                f"{q['worker_per_try']:.2f}; not counted: pre-pings {q['pre_pings_per_try']:.2f}",
            )
        )
    return rows


def _rates(r: dict[str, Any], baseline: str) -> str:
    return (
        f"{r['ti_per_second']:.0f} TI/s ({r['wall_seconds']:.1f} s launch->exit; db span "
        f"{r['db_ti_per_second']:.0f} TI/s) vs {baseline}"
    )


def _chain(shape: str, d: dict[str, Any]) -> list[Figure]:
    targeted = shape == CHAIN_SHAPE
    label = f"(d) chain of {d['task_instances']}, {shape}: hop"
    detail = (
        f"p50 {d['p50_ms']:.1f} ms, max {d['max_ms']:.1f} ms over {d['hops']} hops; mean "
        f"end->pass {d['wake_mean_ms']:.1f} ms, pass->start {d['pass_to_start_mean_ms']:.1f} ms"
    )
    return [
        figure(
            f"d.{shape}.mean",
            f"{label} mean",
            d["mean_ms"],
            "ms",
            at_most=CHAIN_MEAN_MS if targeted else None,
            detail=detail,
        ),
        figure(
            f"d.{shape}.p99",
            f"{label} p99",
            d["p99_ms"],
            "ms",
            at_most=CHAIN_P99_MS if targeted else None,
        ),
    ]


def _embedded(e: dict[str, Any]) -> list[Figure]:
    rows = []
    raw = e["raw_celery_per_second"]
    for key in ("a", "b"):
        if key in e:
            r = e[key]
            rows.append(
                figure(
                    f"embedded.{key}.ratio",
                    f"embedded {NAMES[key]} {r['task_instances']} TIs, {e['workers']}: TI/s / raw",
                    r["ratio"],
                    "x",
                    at_least=EMBEDDED_RATIO if key == "a" else None,
                    detail=_rates(r, f"raw filesystem:// {raw:.0f}/s"),
                )
            )
    return rows


def table(rows: list[Figure], env: dict[str, Any]) -> str:
    out = Console(width=160, record=True, markup=False, highlight=False, emoji=False)
    tbl = Table(title=f"backfill bench: {environment.summary(env)}", title_justify="left")
    for column in ("figure", "value", "target", "", "detail"):
        tbl.add_column(column, overflow="fold")
    for row in rows:
        verdict = {True: "met", False: "NOT MET", None: ""}[row["met"]]
        tbl.add_row(row["label"], _value(row), row["target"] or "-", verdict, row["detail"])
    with out.capture() as captured:
        out.print(tbl)
    met = sum(1 for r in rows if r["met"])
    targeted = sum(1 for r in rows if r["met"] is not None)
    return captured.get() + f"{met} of {targeted} targets met\n"


def _value(row: Figure) -> str:
    value = row["value"]
    if value is None:
        return "n/a"
    text = f"{value:.2f}" if abs(value) < 100 else f"{value:,.0f}"
    return f"{text} {row['unit']}".strip()
