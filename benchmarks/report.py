"""The bench's figures: computed from the raw measurements, printed, and kept as JSON.

Each figure carries its target and whether it was met, so the table and
`.backfill/bench.json` say the same thing.
"""

from __future__ import annotations

from typing import Any

from benchmarks.phases import Drive

TARGET_RATIO = 0.5  # engine TI/s over raw Celery no-op task/s, at least
TARGET_HOP_MS = 25.0  # mean upstream success -> downstream start, at most
TARGET_STATEMENTS = 4.0  # SQL statements per TI try, amortized, at most


def figures(
    *,
    fanout: Drive,
    worker_sql: dict[str, int],
    raw: list[dict[str, float]],
    chain: Drive,
    hops: dict[str, Any],
) -> dict[str, Any]:
    """Everything `make bench` reports, JSON-ready."""
    return {
        "a_fanout": _throughput(fanout, raw),
        "b_chain": {
            "tasks": len(chain.rows),
            "seconds": chain.report["total_seconds"],
            **hops,
            "target_mean_ms": TARGET_HOP_MS,
            "met": hops["mean_ms"] <= TARGET_HOP_MS,
        },
        "c_sql": _statements(fanout, worker_sql),
        "d_rss": {
            "fanout_coordinator_peak_rss_mib": fanout.report["max_rss_kib"] / 1024,
            "chain_coordinator_peak_rss_mib": chain.report["max_rss_kib"] / 1024,
        },
    }


def _throughput(fanout: Drive, raw: list[dict[str, float]]) -> dict[str, Any]:
    fan = fanout.report
    ti_rate = fan["task_instances"] / fan["total_seconds"]
    raw_rate = sum(r["per_second"] for r in raw) / len(raw)
    return {
        "task_instances": fan["task_instances"],
        "seconds": fan["total_seconds"],
        "create_seconds": fan["create_seconds"],
        "ti_per_second": ti_rate,
        "coordinator_passes": fan["passes"],
        "coordinator_pass_seconds": fan["pass_seconds"],
        "raw_celery_runs": raw,
        "raw_celery_per_second": raw_rate,
        "ratio": ti_rate / raw_rate,
        "target_ratio": TARGET_RATIO,
        "met": ti_rate / raw_rate >= TARGET_RATIO,
    }


def _statements(fanout: Drive, worker_sql: dict[str, int]) -> dict[str, Any]:
    fan, tries = fanout.report, fanout.tries
    coordinator = fan["create_sql"]["statements"] + fan["drive_sql"]["statements"]
    pings = _pings(fan["create_sql"]) + _pings(fan["drive_sql"]) + _pings(worker_sql)
    per_try = (coordinator + worker_sql["statements"]) / tries
    return {
        "tries": tries,
        "coordinator_statements": coordinator,
        "worker_statements": worker_sql["statements"],
        "statements_per_try": per_try,
        "coordinator_per_try": coordinator / tries,
        "worker_per_try": worker_sql["statements"] / tries,
        "pre_pings_per_try": pings / tries,
        "worker_messages_handled": worker_sql["tasks"],
        "target_per_try": TARGET_STATEMENTS,
        "met": per_try <= TARGET_STATEMENTS,
    }


def _pings(sql: dict[str, int]) -> int:
    return max(0, sql["checkouts"] - sql["connects"])


def table(f: dict[str, Any], environment: str) -> str:
    a, b, c, d = f["a_fanout"], f["b_chain"], f["c_sql"], f["d_rss"]
    raw = " / ".join(f"{r['per_second']:.0f}" for r in a["raw_celery_runs"])
    lines = [
        f"backfill bench: {environment}",
        f"(a) fan-out {a['task_instances']} TIs: {a['ti_per_second']:.0f} TI/s "
        f"({a['seconds']:.2f} s create -> SUCCESS, {a['coordinator_passes']} passes, "
        f"{a['coordinator_pass_seconds']:.2f} s in passes) | raw celery no-op: "
        f"{a['raw_celery_per_second']:.0f} task/s (before / after: {raw}) | "
        f"ratio {a['ratio']:.2f} (target >= {a['target_ratio']}) {_verdict(a)}",
        f"(b) chain of {b['tasks']} tasks, {b['hops']} hops, upstream end -> downstream start: "
        f"mean {b['mean_ms']:.1f} ms | p50 {b['p50_ms']:.1f} ms | p95 {b['p95_ms']:.1f} ms | "
        f"max {b['max_ms']:.1f} ms (target mean <= {b['target_mean_ms']:g} ms) {_verdict(b)}",
        f"(c) SQL statements per TI try (fan-out, {c['tries']} tries): "
        f"{c['statements_per_try']:.2f} = coordinator {c['coordinator_per_try']:.2f} + "
        f"workers {c['worker_per_try']:.2f} (target <= {c['target_per_try']:g}) {_verdict(c)}",
        f"    not counted above: pool pre-ping SELECT 1 {c['pre_pings_per_try']:.2f}/try, and "
        "psycopg2's BEGIN/COMMIT around non-autocommit transactions",
        f"(d) coordinator peak RSS: {d['fanout_coordinator_peak_rss_mib']:.1f} MiB (fan-out), "
        f"{d['chain_coordinator_peak_rss_mib']:.1f} MiB (chain)",
    ]
    return "\n".join(lines)


def _verdict(figure: dict[str, Any]) -> str:
    return "OK" if figure["met"] else "MISSED"
