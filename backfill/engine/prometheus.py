"""Prometheus metrics of a driving process (`run`, `resume`, `coordinator --metrics-port`).

The engine records what it does through `Metrics`, whose default records
nothing; `PrometheusMetrics` counts it in a registry of its own (never the
process-global one) and serves it as Prometheus text at `/metrics`.

Invariants:
- counted in-process, per coordinator process (several coordinators each export
  their own; Prometheus sums them): `backfill_dispatched_total` (every message
  published, first dispatches and re-dispatches alike),
  `backfill_redispatched_total` (those of them re-sending a lost message),
  `backfill_reaped_total`, and the histograms `backfill_pass_duration_seconds`
  (each pass, retries and publishing included) and `backfill_dispatch_lag_seconds`
  (queued to claimed, `backfill.engine.dispatch_lag`); labelled by `dag_id` only,
  so a long-lived coordinator's series stay as many as its DAGs;
- read from the database at scrape time, the same in every process (aggregate
  them with `max`, not `sum`): `backfill_task_instances{dag_id,backfill_id,state}`
  over the backfills not ended or ended within `ENDED_SHOWN`, every TI state
  present (zeros included) so series do not vanish, and `backfill_claims_lost_total
  {kind}` from `refused_writes`; each scrape is two bounded aggregate statements
  (`backfill.store.metrics_reads`) in one read-only transaction. A scrape during a
  database outage serves the in-process metrics and `backfill_database_up 0`;
- `serving` binds the port before it returns or raises `MetricsAddressError`
  (exit 2), and releases it on exit.
"""

from __future__ import annotations

import errno
import logging
import threading
import weakref
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING

import pendulum
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from backfill.engine.errors import MetricsAddressError
from backfill.engine.metrics import Metrics
from backfill.store import metrics_reads, reads
from backfill.store.reconnect import Outage, is_database_error

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)

ENDED_SHOWN = timedelta(hours=1)  # an ended backfill's TIs are exported this long after
PASS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class PrometheusMetrics(Metrics):
    """The metrics in a registry of their own; thread-safe (the daemon's threads share it)."""

    observes_lag = True

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels, reg = ["dag_id"], self.registry
        self._dispatched = Counter(
            "backfill_dispatched", "Messages published.", labels, registry=reg
        )
        self._redispatched = Counter(
            "backfill_redispatched", "Messages re-sent for lost ones.", labels, registry=reg
        )
        self._reaped = Counter(
            "backfill_reaped", "Running TIs reaped for a stale heartbeat.", labels, registry=reg
        )
        self._pass = Histogram(
            "backfill_pass_duration_seconds",
            "Coordinator passes.",
            labels,
            buckets=PASS_BUCKETS,
            registry=reg,
        )
        self._lag = Histogram(
            "backfill_dispatch_lag_seconds",
            "From queued to claimed, per try.",
            labels,
            buckets=LAG_BUCKETS,
            registry=reg,
        )
        self._reach = ReachCollector()
        reg.register(self._reach)

    def dispatched(self, n: int, *, dag_id: str) -> None:
        self._dispatched.labels(dag_id).inc(n)

    def redispatched(self, n: int, *, dag_id: str) -> None:
        self._redispatched.labels(dag_id).inc(n)

    def reaped(self, n: int, *, dag_id: str) -> None:
        self._reaped.labels(dag_id).inc(n)

    def pass_took(self, seconds: float, *, dag_id: str) -> None:
        self._pass.labels(dag_id).observe(seconds)

    def claimed(self, lags: Sequence[float], *, dag_id: str) -> None:
        child = self._lag.labels(dag_id)
        for lag in lags:
            child.observe(lag)

    def watch(self, engine: Engine) -> None:
        self.registry.register(DatabaseCollector(engine))

    def outages(self, *, database: Outage, broker: Outage) -> None:
        self._reach.add(database, broker)

    @contextmanager
    def serving(self, host: str, port: int) -> Iterator[None]:
        """Serve `/metrics` on host:port in a daemon thread until the block ends."""
        try:
            server, thread = start_http_server(port, host, registry=self.registry)
        except OSError as exc:  # socket.gaierror too: an unknown host name
            raise MetricsAddressError(_why_not(host, port, exc)) from None
        try:
            yield
        finally:
            server.shutdown()
            server.server_close()  # the port is free again
            thread.join()


def _why_not(host: str, port: int, exc: OSError) -> str:
    where = f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return (
            f"--metrics-port {port}: {where} is already in use; pick a free port "
            "or stop the process listening on it"
        )
    return f"cannot serve metrics on {where} ({exc.strerror or exc}); check --metrics-host"


class ReachCollector:
    """`backfill_db_up` and `backfill_broker_up`: 0 while any driver of this process is in
    an outage of that service (it retries, with backoff, and says so in its log), else 1.
    Drivers come and go (one per backfill in a daemon): they are held weakly."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # drivers add while the server's thread collects
        self._held: list[tuple[weakref.ref[Outage], weakref.ref[Outage]]] = []

    def add(self, database: Outage, broker: Outage) -> None:
        with self._lock:
            self._held.append((weakref.ref(database), weakref.ref(broker)))

    def describe(self) -> Iterable[Metric]:
        return list(self.collect())

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            pairs = [(db(), broker()) for db, broker in self._held]
            alive = [(db, b) for db, b in pairs if db is not None and b is not None]
            self._held = [(weakref.ref(db), weakref.ref(b)) for db, b in alive]
        for name, what, down in (
            ("backfill_db_up", "the metadata database", any(db.down for db, _ in alive)),
            ("backfill_broker_up", "the broker", any(b.down for _, b in alive)),
        ):
            yield GaugeMetricFamily(
                name, f"Whether this process's drivers reach {what}.", 0 if down else 1
            )


class DatabaseCollector:
    """The metrics read from the database at each scrape (see the module doc)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._outage = Outage("metrics: database", log.warning)

    def describe(self) -> Iterable[Metric]:
        """The families `collect` yields, without reading the database."""
        return _families()

    def collect(self) -> Iterable[Metric]:
        since = pendulum.now("UTC") - ENDED_SHOWN
        try:
            with reads.reading(self._engine) as conn:
                backfills = metrics_reads.task_instance_counts(conn, ended_since=since)
                refusals = metrics_reads.refusal_counts(conn)
        except Exception as exc:  # a scrape's edge: the in-process metrics still go out
            if not is_database_error(exc):
                raise
            self._outage.failed(exc)
            up, _, _ = _families()
            up.add_metric([], 0)
            return [up]
        self._outage.ok()
        up, tis, lost = _families()
        up.add_metric([], 1)
        for counted in backfills:
            for state, n in counted.task_instances.items():
                tis.add_metric([counted.dag_id, str(counted.backfill_id), state.value], n)
        for kind, n in refusals.items():
            lost.add_metric([kind.value], n)
        return [up, tis, lost]


def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, CounterMetricFamily]:
    up = GaugeMetricFamily(
        "backfill_database_up", "1 if this scrape could read the metadata database, else 0."
    )
    tis = GaugeMetricFamily(
        "backfill_task_instances",
        "TIs of the backfills not ended or ended within the hour, by state.",
        labels=["dag_id", "backfill_id", "state"],
    )
    lost = CounterMetricFamily(
        "backfill_claims_lost",
        "Worker writes refused by the fence (refused_writes rows), by kind.",
        labels=["kind"],
    )
    return up, tis, lost
