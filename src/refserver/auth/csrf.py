"""CSRF protection for browser forms (synchronizer token kept in the session).

Every state-changing request authenticated by the session cookie must carry the
session's token, as the form field ``csrf_token`` or the ``X-CSRF-Token`` header
(HTMX sends the header). Bearer-token requests are not cookie-authenticated, so
they need no CSRF token.
"""

from __future__ import annotations

import hmac
import secrets

from fastapi import HTTPException, Request

SAFE_METHODS = {"GET", "HEAD", "OPTIONS", "TRACE"}


def get_csrf_token(request: Request) -> str:
    """The session's token, created on first use (templates put it in every form)."""
    token = request.session.get("csrf")
    if not token:
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


async def verify_csrf(request: Request) -> None:
    """FastAPI dependency: refuse a cookie-authenticated change without the token."""
    if request.method in SAFE_METHODS:
        return
    if request.headers.get("authorization", "").lower().startswith("bearer "):
        return
    if "session" not in request.scope or "uid" not in request.session:
        return  # not cookie-authenticated: the auth dependency answers 401
    expected = request.session.get("csrf")
    sent = request.headers.get("x-csrf-token")
    if not sent:
        ctype = request.headers.get("content-type", "")
        if ctype.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            form = await request.form()
            sent = str(form.get("csrf_token") or "")
    if not expected or not sent or not hmac.compare_digest(str(expected), str(sent)):
        raise HTTPException(403, "missing or invalid CSRF token; reload the page and try again")
