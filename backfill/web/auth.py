"""Who may read and write through `backfill web` (DESIGN section 7).

Invariants:
- without `BACKFILL_API_TOKEN` every read is allowed and every write is
  refused (403): a server nobody configured is read-only;
- with it, every request needs the token: as `Authorization: Bearer <token>`
  (the API), or as the session cookie the login form sets (the pages). Only
  the login form and the static files (no data) are served without it; a
  request without it gets 401 (a page redirects to the login form);
- the session cookie holds an HMAC of the token, never the token: changing
  the token logs every browser out. It is HttpOnly and SameSite=Strict;
- a write authorised by the cookie must also carry the CSRF token
  (`X-CSRF-Token`, an HMAC of the token and the cookie, which the pages embed
  and another origin cannot read): a browser sends cookies to a cross-site
  form post, never that header. A bearer token is never sent by a browser on
  its own, so a bearer write needs no CSRF token;
- every comparison of secrets is constant-time.
"""

from __future__ import annotations

import enum
import hashlib
import hmac

from fastapi import Request

from backfill.web.errors import Forbidden, Unauthorized

SESSION_COOKIE = "backfill_session"
CSRF_HEADER = "X-CSRF-Token"


class Access(enum.Enum):
    OPEN = "open"  # no token configured: reads only
    BEARER = "bearer"
    SESSION = "session"


class Auth:
    def __init__(self, token: str | None) -> None:
        self._token = token

    @property
    def required(self) -> bool:
        return self._token is not None

    def _mac(self, purpose: str) -> str:
        assert self._token is not None
        return hmac.new(self._token.encode(), purpose.encode(), hashlib.sha256).hexdigest()

    def session(self) -> str:
        """The session cookie's value."""
        return self._mac("backfill-session-v1")

    def csrf(self) -> str | None:
        """The CSRF token a page embeds; None when writes are refused anyway."""
        return None if self._token is None else self._mac("backfill-csrf-v1:" + self.session())

    def token_matches(self, given: str) -> bool:
        return self._token is not None and hmac.compare_digest(given.encode(), self._token.encode())

    def access(self, request: Request) -> Access | None:
        """How `request` is authorised; None: it is not."""
        if self._token is None:
            return Access.OPEN
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and self.token_matches(given.strip()):
            return Access.BEARER
        cookie = request.cookies.get(SESSION_COOKIE, "")
        if cookie and hmac.compare_digest(cookie.encode(), self.session().encode()):
            return Access.SESSION
        return None

    def check_read(self, request: Request) -> Access:
        access = self.access(request)
        if access is None:
            raise Unauthorized(
                "this server needs its API token: send `Authorization: Bearer <token>`, "
                "or log in at /login"
            )
        return access

    def check_write(self, request: Request) -> None:
        access = self.check_read(request)
        if access is Access.OPEN:
            raise Forbidden(
                "writes are refused: this server has no API token; start `backfill web` "
                "with BACKFILL_API_TOKEN set to allow them"
            )
        if access is Access.SESSION:
            given = request.headers.get(CSRF_HEADER, "")
            expected = self.csrf() or ""
            if not hmac.compare_digest(given.encode(), expected.encode()):
                raise Forbidden(
                    f"this write has no valid {CSRF_HEADER} header: reload the page and retry"
                )
