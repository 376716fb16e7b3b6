"""The ASGI application of `backfill web`: the pages, the JSON API and `/metrics`.

Invariants:
- one `backfill.Client` for the process (its operations, and the one engine its
  `Database` opens), closed at shutdown;
- every error is answered as JSON `{"error": ...}` with the status of its
  class (`errors.status_of`), or, for a page that needs a login, a redirect
  to the login form; a bug is a 500 with a generic message, its traceback
  logged, never sent;
- no request reaches a CDN or any other host: the pages' scripts and styles
  are served from `static/`, and the interactive API docs (which load
  from a CDN) are off; the OpenAPI document is at `/api/v1/openapi.json`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from backfill.client.client import Client
from backfill.config import Settings
from backfill.errors import BackfillError
from backfill.web import api, metrics, pages
from backfill.web.auth import Auth
from backfill.web.errors import Unauthorized, status_of

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
_FOR_PROGRAMS = ("/api/", "/metrics")  # paths read by programs, not browsers


def make_app(settings: Settings) -> FastAPI:
    client = Client(settings=settings, who="web")

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        client.close()

    app = FastAPI(
        title="Backfill",
        summary="Backfills of DAGs over Celery worker fleets: the HTTP API of `backfill web`.",
        version="1",
        openapi_url="/api/v1/openapi.json",
        docs_url=None,  # Swagger UI loads its scripts from a CDN: pages must work offline
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.client = client
    app.state.auth = Auth(settings.api_token)
    app.include_router(api.router)
    app.include_router(api.writes)
    app.include_router(pages.router)
    app.include_router(metrics.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    # A grid of 1,000 dates x 50 tasks is ~60 kB of JSON every poll; gzip makes it ~8.
    app.add_middleware(GZipMiddleware, minimum_size=1024)
    app.add_exception_handler(BackfillError, _backfill_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _bug)
    return app


def _wants_page(request: Request) -> bool:
    """A browser asking for a page: the API and `/metrics` answer their programs (API
    clients, Prometheus) a 401 to act on, never a redirect to a login form."""
    accepts_html = "text/html" in request.headers.get("accept", "")
    return (
        request.method == "GET" and accepts_html and not request.url.path.startswith(_FOR_PROGRAMS)
    )


async def _backfill_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BackfillError)
    if isinstance(exc, Unauthorized) and _wants_page(request):
        # Quoted: a "+" of a date's offset would come back from the query as a space.
        return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)
    code = status_of(exc)
    if code == 500:
        return await _bug(request, exc)
    return JSONResponse({"error": str(exc)}, status_code=code)


async def _invalid(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {}
    where = ".".join(str(part) for part in first.get("loc", ()))
    message = f"{where}: {first.get('msg', 'invalid')}" if where else "invalid request"
    detail = [{k: e.get(k) for k in ("loc", "msg", "type")} for e in errors]
    return JSONResponse({"error": message, "detail": detail}, status_code=422)


async def _http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = {404: "no such page or endpoint", 405: "method not allowed here"}.get(
        exc.status_code, str(exc.detail)
    )
    return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)


async def _bug(request: Request, exc: Exception) -> Response:
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return JSONResponse(
        {"error": "internal error: the server logged it; please report it"}, status_code=500
    )
