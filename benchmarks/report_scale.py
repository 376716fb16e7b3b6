"""The figures of (e), the 439,200-TI scale scenario, and of the pass time (`benchmarks.report`)."""

from __future__ import annotations

from typing import Any

from benchmarks.figure import Figure, figure

CREATE_SECONDS, CREATE_MB = 60.0, 400.0
LATE_OVER_EARLY = 0.9
COORDINATOR_MB = 300.0
STATUS_SECONDS = TASKS_PAGE_SECONDS = 1.0
JSONL_TI_PER_SECOND, JSONL_MB = 50_000.0, 200.0


def figures(s: dict[str, Any], passes: dict[str, Any]) -> list[Figure]:
    c, early, late = s["create"], s["early"], s["late"]
    tis = f"{c['task_instances']:,} TIs"
    return [
        figure(
            "e.create.seconds",
            f"(e) backfill create, {tis}: wall",
            c["seconds"],
            "s",
            at_most=CREATE_SECONDS,
            detail=f"{c['statements']} SQL statements",
        ),
        figure(
            "e.create.rss",
            "(e) backfill create: peak RSS",
            c["peak_rss_mb"],
            "MB",
            at_most=CREATE_MB,
        ),
        *_bytes(s),
        figure(
            "e.early",
            "(e) coordinator TI/s, early window",
            early["ti_per_second"],
            "TI/s",
            detail=f"{early['ended_in_window']} TIs ended in {early['window']}",
        ),
        figure(
            "e.late",
            "(e) coordinator TI/s, late window",
            late["ti_per_second"],
            "TI/s",
            detail=f"after fast-forward of {s['fast_forward']['runs']} runs, "
            f"{s['fast_forward']['keep_runs']} left",
        ),
        figure(
            "e.late_over_early",
            "(e) late / early TI/s",
            s["late_over_early"],
            "x",
            at_least=LATE_OVER_EARLY,
        ),
        figure(
            "e.coordinator.rss",
            "(e) backfill coordinator: peak RSS",
            s["coordinator_peak_rss_mb"],
            "MB",
            at_most=COORDINATOR_MB,
        ),
        *_passes(passes),
        *_operator(s["operator"]),
    ]


def _bytes(s: dict[str, Any]) -> list[Figure]:
    early, full = s["bytes_after_early"], s["bytes_after_fast_forward"]
    return [
        figure(
            "e.bytes_per_ti",
            "(e) DB bytes per TI, after the early window",
            early["per_ti"],
            "B",
            detail=f"journal {early['journal_per_ti']:.0f} B/TI",
        ),
        figure(
            "e.bytes_per_ti.full",
            "(e) DB bytes per TI, after fast-forward (full history)",
            full["per_ti"],
            "B",
            detail=f"journal {full['journal_per_ti']:.0f} B/TI",
        ),
    ]


def _passes(p: dict[str, Any]) -> list[Figure]:
    if not p:
        return []
    rows = [
        figure(
            f"pass.{label}",
            f"coordinator pass, {p[label]['active_tis']:,} active TIs: median",
            p[label]["median_ms"],
            "ms",
            detail=f"min {p[label]['min_ms']:.1f}, max {p[label]['max_ms']:.1f} ms",
        )
        for label in ("1k", "10k")
    ]
    rows.append(figure("pass.ratio", "coordinator pass 10k / 1k", p["ratio_10k_over_1k"], "x"))
    return rows


def _operator(o: dict[str, Any]) -> list[Figure]:
    def detail(name: str) -> str:
        r = o[name]
        if not r["ok"]:
            return f"FAILED: {r['error']}"
        return f"{r['in_process_seconds']:.2f} s after start-up; peak RSS {r['peak_rss_mb']:.0f} MB"

    def seconds(name: str) -> float | None:
        return o[name]["seconds"] if o[name]["ok"] else None

    jsonl = o["tasks_jsonl"]
    return [
        figure(
            "ops.status",
            f"(e) {o['status']['command']}",
            seconds("status"),
            "s",
            below=STATUS_SECONDS,
            detail=detail("status"),
        ),
        figure(
            "ops.tasks",
            f"(e) {o['tasks_page']['command']} (default page)",
            seconds("tasks_page"),
            "s",
            below=TASKS_PAGE_SECONDS,
            detail=detail("tasks_page"),
        ),
        figure(
            "ops.jsonl.rate",
            f"(e) {jsonl['command']}: TI/s",
            jsonl["ti_per_second"],
            "TI/s",
            at_least=JSONL_TI_PER_SECOND,
            detail=detail("tasks_jsonl"),
        ),
        figure(
            "ops.jsonl.rss",
            f"(e) {jsonl['command']}: peak RSS",
            jsonl["peak_rss_mb"] if jsonl["ok"] else None,
            "MB",
            below=JSONL_MB,
        ),
        figure(
            "ops.list", f"(e) {o['list']['command']}", seconds("list"), "s", detail=detail("list")
        ),
    ]
