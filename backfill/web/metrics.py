"""`/metrics` on the web port: one port is enough in a small deployment.

It serves what every process serves from the database at scrape time
(`engine.prometheus.DatabaseCollector`: `backfill_task_instances`,
`backfill_claims_lost_total`, `backfill_database_up`), the same as a
coordinator's, so aggregate them with `max`. A coordinator's own counters and
histograms stay on its `--metrics-port`. It needs the token like every
request (Prometheus: `authorization: {credentials: ...}` in the scrape
config).
"""

from __future__ import annotations

import threading

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from backfill.client.database import Database
from backfill.engine.prometheus import DatabaseCollector
from backfill.web.api import reader

router = APIRouter(dependencies=[Depends(reader)])
_lock = threading.Lock()


def _registry(request: Request) -> CollectorRegistry | None:
    """The app's registry, made once its database exists."""
    with _lock:
        registry: CollectorRegistry | None = getattr(request.app.state, "registry", None)
        if registry is None:
            store: Database = request.app.state.client.database
            engine = store.engine(create=False)
            if engine is None:
                return None
            registry = CollectorRegistry()
            registry.register(DatabaseCollector(engine))
            request.app.state.registry = registry
        return registry


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    registry = _registry(request)
    body = b"" if registry is None else generate_latest(registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
