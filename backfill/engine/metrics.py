"""What the engine records as it drives: the `Metrics` interface, recording nothing.

`backfill.engine.prometheus.PrometheusMetrics` counts it and serves it (see
there for the metric names and their invariants); this module imports no
Prometheus client, so a command run without `--metrics-port` does not pay for
one at start-up.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from backfill.store.reconnect import Outage


class Metrics:
    """What the engine records as it drives; this default records nothing."""

    observes_lag = False  # whether the coordinator should read claims for the lag

    def dispatched(self, n: int, *, dag_id: str) -> None:
        """`n` messages published (first dispatches and re-dispatches)."""

    def redispatched(self, n: int, *, dag_id: str) -> None:
        """`n` of the messages published re-sent a lost one."""

    def reaped(self, n: int, *, dag_id: str) -> None:
        """`n` running TIs reaped: their heartbeat went stale."""

    def pass_took(self, seconds: float, *, dag_id: str) -> None:
        """A coordinator pass took `seconds`."""

    def claimed(self, lags: Sequence[float], *, dag_id: str) -> None:
        """Tries were claimed, each `lag` seconds after it was queued."""

    def watch(self, engine: Engine) -> None:
        """Export what `engine`'s database holds too, read at each scrape."""

    def outages(self, *, database: Outage, broker: Outage) -> None:
        """Export whether a driver reaches the database and the broker, as it last tried."""


NO_METRICS = Metrics()
