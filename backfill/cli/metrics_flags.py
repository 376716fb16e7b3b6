"""`--metrics-port P` and `--metrics-host H` of the driving commands (`run`, `resume`,
`coordinator`): Prometheus text at `http://H:P/metrics` for as long as the command runs.

Invariants:
- without `--metrics-port` nothing is served and the engine records nothing;
- the port is bound before the command writes anything: a port in use, or a host
  that cannot be listened on, exits 2 naming them, with nothing written; the port
  is released when the command ends, however it ends;
- the host defaults to 127.0.0.1, this host only, not prometheus_client's 0.0.0.0:
  exposing the metrics to the network is a choice (`--metrics-host 0.0.0.0`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import click

from backfill.engine.metrics import NO_METRICS, Metrics
from backfill.errors import UserError

DEFAULT_HOST = "127.0.0.1"


@dataclass(frozen=True)
class MetricsAddress:
    host: str
    port: int

    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 address
        return f"http://{host}:{self.port}/metrics"


def metrics_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Add the two flags; the command receives `metrics_address: MetricsAddress | None`."""

    @functools.wraps(fn)
    def build(*args: Any, metrics_port: int | None, metrics_host: str | None, **kwargs: Any) -> Any:
        if metrics_host is not None and metrics_port is None:
            raise UserError("--metrics-host needs --metrics-port: the port to serve metrics on")
        address = None
        if metrics_port is not None:
            address = MetricsAddress(metrics_host or DEFAULT_HOST, metrics_port)
        return fn(*args, metrics_address=address, **kwargs)

    build = click.option(
        "--metrics-host",
        metavar="HOST",
        help=f"Address to serve metrics on (default: {DEFAULT_HOST}, this host only).",
    )(build)
    return click.option(
        "--metrics-port",
        type=click.IntRange(1, 65535),
        metavar="P",
        help="Serve Prometheus metrics at http://HOST:P/metrics while the command runs.",
    )(build)


@contextmanager
def serving_metrics(address: MetricsAddress | None) -> Iterator[Metrics]:
    """The metrics to record into, served at `address` until the block ends (None: none)."""
    if address is None:
        yield NO_METRICS
        return
    from backfill.engine.prometheus import PrometheusMetrics

    metrics = PrometheusMetrics()
    with metrics.serving(address.host, address.port):  # MetricsAddressError: exit 2
        click.echo(f"serving metrics at {address.url()}", err=True)
        yield metrics
