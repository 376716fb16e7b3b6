"""Scraping a `--metrics-port` endpoint as Prometheus does: a real HTTP GET of
`/metrics`, parsed by prometheus_client's own text parser.

- `free_port()`: a TCP port of 127.0.0.1 free right now (the command binds it a
  moment later; nothing else of the test binds ports meanwhile);
- `scrape(port)`: the samples served, or None while nothing answers;
- `Scrape.value(name, **labels)`: the sum of the samples `name` whose labels
  include `labels`; `Scrape.states(backfill_id)`: the TI gauge of one backfill.
"""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_free(port: int) -> bool:
    """Whether a server could listen on 127.0.0.1:`port` now (the command released it).
    SO_REUSEADDR, as servers set it: the scrapes' closed connections linger in TIME_WAIT."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@dataclass(frozen=True)
class Scrape:
    text: str
    samples: tuple[Sample, ...]

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples `name` whose labels include `labels` (0 if none)."""
        return sum(
            s.value
            for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )

    def has(self, name: str, **labels: str) -> bool:
        return any(
            s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
            for s in self.samples
        )

    def states(self, backfill_id: int) -> dict[str, float]:
        """State -> value of `backfill_task_instances` for the backfill."""
        return {
            s.labels["state"]: s.value
            for s in self.samples
            if s.name == "backfill_task_instances" and s.labels["backfill_id"] == str(backfill_id)
        }


def scrape(port: int) -> Scrape | None:
    """GET http://127.0.0.1:`port`/metrics, parsed; None while nothing answers there."""
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None
    families = text_string_to_metric_families(text)
    return Scrape(text, tuple(s for family in families for s in family.samples))
