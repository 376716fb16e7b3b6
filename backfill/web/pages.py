"""The pages of `backfill web`: the backfills, a backfill's grid, a TI with its logs,
and the login form.

Invariants:
- a page is a Jinja2 template over the same client reads as the API; its
  live parts are filled by the small scripts in `static/`, from the API:
  nothing is computed twice;
- with a token configured, a page without a session redirects to the login
  form, which takes the token and sets the session cookie (`auth`); `next`
  only ever leads to a path of this server;
- write buttons are shown only to a session that may write: they send the
  CSRF token the page embeds;
- a TI page of a mapped task asked without `map_index` (a link from the
  failed list, or typed) redirects to the TI its grid cell shows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from backfill.client.client import Client
from backfill.client.listing import listing
from backfill.errors import UserError
from backfill.store import status
from backfill.store.errors import BackfillNotFound
from backfill.web.api import BackfillId, MapIndex, Store
from backfill.web.auth import SESSION_COOKIE, Access, Auth

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
router = APIRouter(include_in_schema=False)
LIST_SHOWN = 100  # backfills the list page shows
MAX_LOGIN_FORM = 4096  # bytes of a login form read


def duration(seconds: float) -> str:
    """`1h 02m`, `3m 05s`, `42s`: an ETA in the list."""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


templates.env.filters["duration"] = duration


def _auth(request: Request) -> Auth:
    auth: Auth = request.app.state.auth
    return auth


def page_access(request: Request) -> Access:
    return _auth(request).check_read(request)


Viewer = Annotated[Access, Depends(page_access)]


def _render(request: Request, name: str, access: Access, **context: Any) -> HTMLResponse:
    auth = _auth(request)
    can_write = access is not Access.OPEN
    return templates.TemplateResponse(
        request,
        name,
        {
            **context,
            "can_write": can_write,
            "csrf": auth.csrf() if can_write else "",
            "logged_in": access is Access.SESSION,
            "read_only_reason": None
            if can_write
            else "read-only: start `backfill web` with BACKFILL_API_TOKEN set to allow writes",
        },
    )


@router.get("/", response_class=HTMLResponse)
def index(request: Request, access: Viewer, store: Store, part: str | None = None) -> Response:
    with store.reading() as conn:
        rows = [] if conn is None else listing(conn, None, limit=LIST_SHOWN, offset=0)
    name = "list_rows.html" if part == "rows" else "index.html"
    return _render(request, name, access, backfills=rows, shown=LIST_SHOWN)


@router.get("/backfills/{backfill_id}", response_class=HTMLResponse)
def backfill_page(
    request: Request, backfill_id: BackfillId, access: Viewer, store: Store
) -> Response:
    with store.reading() as conn:
        found = None if conn is None else status.summary(conn, backfill_id)
    if found is None:
        raise BackfillNotFound(backfill_id)
    return _render(request, "backfill.html", access, backfill=found)


@router.get("/backfills/{backfill_id}/tasks/{task_id}/{logical_date}", response_class=HTMLResponse)
def ti_page(
    request: Request,
    backfill_id: BackfillId,
    *,
    task_id: str,
    logical_date: str,
    access: Viewer,
    store: Store,
    map_index: MapIndex = None,
) -> Response:
    with store.reading_about(backfill_id) as conn:
        if not status.exists(conn, backfill_id):
            raise BackfillNotFound(backfill_id)
    if map_index is None:
        client: Client = request.app.state.client
        try:
            shown = client.shown_map_index(backfill_id, task_id, logical_date)
        except UserError:  # no such TI: the page's script says so, as for any TI
            shown = None
        if shown is not None:
            return RedirectResponse(f"{request.url.path}?map_index={shown}", status_code=303)
    return _render(
        request,
        "ti.html",
        access,
        backfill_id=backfill_id,
        task_id=task_id,
        logical_date=logical_date,
        map_index=-1 if map_index is None else map_index,
        shown_task=task_id if map_index is None or map_index < 0 else f"{task_id}[{map_index}]",
    )


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str = "/") -> Response:
    if not _auth(request).required:
        return RedirectResponse(_safe(next), status_code=303)
    return templates.TemplateResponse(request, "login.html", {"next": _safe(next), "error": None})


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    auth = _auth(request)
    body = (await request.body())[:MAX_LOGIN_FORM].decode("utf-8", errors="replace")
    form = {key: values[0] for key, values in parse_qs(body).items()}
    target = _safe(form.get("next", "/"))
    if not auth.token_matches(form.get("token", "")):
        context = {"next": target, "error": "That is not this server's API token."}
        return templates.TemplateResponse(request, "login.html", context, status_code=401)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(SESSION_COOKIE, auth.session(), httponly=True, samesite="strict", path="/")
    return response


@router.post("/logout")
def logout() -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def _safe(target: str) -> str:
    """`target` if it is a path of this server, else `/`: a login never leads elsewhere."""
    ok = target.startswith("/") and not target.startswith("//") and "\\" not in target
    return target if ok else "/"
