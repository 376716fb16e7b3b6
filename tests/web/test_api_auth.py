"""Who may read and write through a live `backfill web` (DESIGN section 7, `web/auth.py`).

With BACKFILL_API_TOKEN set, every request needs the token: the API and
`/metrics` answer 401 without it or with a wrong one, the pages redirect to the
login form, whose session cookie then opens the pages and the API; a write
with that cookie also needs the page's CSRF token. Without a token the server
is read-only: every write is 403. Every refused write leaves every row of the
database as it was. No worker or coordinator is needed: a created backfill
waits, queued, for one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy.engine import Engine
from support.cli import invoke
from support.private_redis import PrivateRedis
from support.rows import every_row
from support.stack import Stack
from support.web import WebServers

from backfill.store.db import create_engine_for

TOKEN = "auth-test-token"
CREATE = {"dag_id": "ha_gate", "start": "2016-01-01", "end": "2016-01-02"}
WRITES = ("pause", "resume", "cancel", "clear")
BROWSER = {"accept": "text/html,application/xhtml+xml,*/*;q=0.8"}  # what a browser asks for
_CSRF = re.compile(r'<meta name="csrf-token" content="([^"]*)">')


@pytest.fixture
def stack(db_url: str, broker: PrivateRedis, tmp_path: Path) -> Stack:
    return Stack.create(db_url, broker, tmp_path)


@pytest.fixture
def db(stack: Stack) -> Iterator[Engine]:
    engine = create_engine_for(stack.db_url)
    yield engine
    engine.dispose()


def created(stack: Stack) -> int:
    """A backfill made by `backfill create` (in this process): queued, nothing drives it."""
    done = invoke(
        stack.home,
        *("create", CREATE["dag_id"], "-s", CREATE["start"], "-e", CREATE["end"], "-o", "json"),
        dags=stack.dags,
        db_url=stack.db_url,
    )
    assert done.exit_code == 0, done.output
    return int(json.loads(done.stdout)["id"])


def refused(answer: httpx.Response, status: int, *fragments: str) -> None:
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    for fragment in fragments:
        assert fragment in error, error


def test_with_a_token_every_request_needs_it(
    stack: Stack, db: Engine, web_servers: WebServers
) -> None:
    web = web_servers.start(stack.env(), token=TOKEN)
    backfill_id = created(stack)
    before = every_row(db)
    for client in (web.client(), web.client(token="not-the-token")):
        with client:
            for path in ("/api/v1/backfills", f"/api/v1/backfills/{backfill_id}", "/metrics"):
                refused(client.get(path), 401, "API token", "Authorization: Bearer")
            refused(client.post("/api/v1/backfills", json=CREATE), 401)
            refused(client.post(f"/api/v1/backfills/{backfill_id}/cancel"), 401)
            refused(client.get("/metrics", headers=BROWSER), 401)  # programs never redirected
            for page in ("/", f"/backfills/{backfill_id}"):
                answer = client.get(page, headers=BROWSER)
                assert answer.status_code == 303, answer.text
                assert answer.headers["location"] == f"/login?next={page}"
            # A TI page's date keeps its "+" through the login's query string.
            ti_page = f"/backfills/{backfill_id}/tasks/t/2016-01-01T00:00:00+00:00"
            answer = client.get(ti_page, headers=BROWSER)
            assert answer.headers["location"] == (
                f"/login?next=/backfills/{backfill_id}/tasks/t/2016-01-01T00%3A00%3A00%2B00%3A00"
            )
            assert parse_qs(urlsplit(answer.headers["location"]).query)["next"] == [ti_page]
    assert every_row(db) == before
    with web.client(token=TOKEN) as client:
        assert client.get("/api/v1/backfills").json()[0]["id"] == backfill_id
        assert client.get("/metrics").status_code == 200
        assert client.get(f"/backfills/{backfill_id}").status_code == 200
        made = client.post("/api/v1/backfills", json={**CREATE, "end": "2016-01-03"})
        assert made.status_code == 201, made.text  # a bearer write needs no CSRF token


def test_the_login_sets_a_session_whose_writes_need_the_pages_csrf_token(
    stack: Stack, db: Engine, web_servers: WebServers
) -> None:
    web = web_servers.start(stack.env(), token=TOKEN)
    backfill_id = created(stack)
    with web.client() as browser:
        wrong = browser.post("/login", data={"token": "nope", "next": "/"})
        assert wrong.status_code == 401
        assert "backfill_session" not in browser.cookies
        login = browser.post("/login", data={"token": TOKEN, "next": f"/backfills/{backfill_id}"})
        assert login.status_code == 303, login.text
        assert login.headers["location"] == f"/backfills/{backfill_id}"
        assert TOKEN not in login.headers["set-cookie"]  # an HMAC of it, never the token
        page = browser.get(f"/backfills/{backfill_id}")
        assert page.status_code == 200, page.text
        assert browser.get("/api/v1/backfills").status_code == 200
        match = _CSRF.search(page.text)
        assert match is not None, page.text
        csrf = match.group(1)
        assert csrf, page.text

        before = every_row(db)
        cancel = f"/api/v1/backfills/{backfill_id}/cancel"
        refused(browser.post(cancel), 403, "X-CSRF-Token")
        refused(browser.post(cancel, headers={"X-CSRF-Token": "forged"}), 403, "X-CSRF-Token")
        refused(browser.post("/api/v1/backfills", json=CREATE), 403, "X-CSRF-Token")
        assert every_row(db) == before

        done = browser.post(cancel, headers={"X-CSRF-Token": csrf})
        assert done.status_code == 200, done.text
        assert done.json()["state"] == "cancelled"
        assert browser.get(f"/api/v1/backfills/{backfill_id}").json()["state"] == "cancelled"


def test_without_a_token_reads_work_and_every_write_is_refused(
    stack: Stack, db: Engine, web_servers: WebServers
) -> None:
    web = web_servers.start(stack.env())
    backfill_id = created(stack)
    before = every_row(db)
    with web.client() as client:
        assert client.get("/api/v1/backfills").json()[0]["id"] == backfill_id
        assert client.get(f"/api/v1/backfills/{backfill_id}").status_code == 200
        assert client.get("/metrics").status_code == 200
        page = client.get(f"/backfills/{backfill_id}")
        assert page.status_code == 200, page.text
        assert "read-only" in page.text
        refused(client.post("/api/v1/backfills", json=CREATE), 403, "BACKFILL_API_TOKEN")
        for action in WRITES:
            body = {"states": ["failed"]} if action == "clear" else None
            answer = client.post(f"/api/v1/backfills/{backfill_id}/{action}", json=body)
            refused(answer, 403, "BACKFILL_API_TOKEN")
    with web.client(token="any") as client:  # a token the server does not have changes nothing
        refused(client.post(f"/api/v1/backfills/{backfill_id}/cancel"), 403)
    assert every_row(db) == before
