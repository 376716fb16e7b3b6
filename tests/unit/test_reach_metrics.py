"""`backfill_db_up` / `backfill_broker_up`: what a process's drivers last found, served
through prometheus-client's registry and read back with its own parser."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from backfill.engine.prometheus import PrometheusMetrics
from backfill.store.reconnect import Outage


def values(metrics: PrometheusMetrics) -> dict[str, float]:
    text = generate_latest(metrics.registry).decode()
    return {
        f.name: f.samples[0].value
        for f in text_string_to_metric_families(text)
        if f.name in ("backfill_db_up", "backfill_broker_up")
    }


def test_a_driver_in_an_outage_turns_its_gauge_to_zero_until_it_ends() -> None:
    metrics = PrometheusMetrics()
    assert values(metrics) == {"backfill_db_up": 1, "backfill_broker_up": 1}  # no driver yet
    database, broker = Outage("database", print), Outage("broker", print, tolerated=0)
    other_db = Outage("database", print)  # a second driver of the same process
    metrics.outages(database=database, broker=broker)
    metrics.outages(database=other_db, broker=Outage("broker", print, tolerated=0))

    database.failed(OSError("connection refused"))  # one failure is tolerated
    assert values(metrics) == {"backfill_db_up": 1, "backfill_broker_up": 1}
    database.failed(OSError("connection refused"))
    broker.failed(OSError("connection refused"))
    assert values(metrics) == {"backfill_db_up": 0, "backfill_broker_up": 0}
    database.ok()
    broker.ok()
    assert values(metrics) == {"backfill_db_up": 1, "backfill_broker_up": 1}
