"""Dependency aliases that keep routes thin (full-stack-fastapi-template style)."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool

from refserver.auth.ratelimit import rate_limits
from refserver.auth.users import Accounts, AuthError, Principal
from refserver.context import AppContext


def get_ctx(request: Request) -> AppContext:
    return request.app.state.ctx


def get_accounts(request: Request) -> Accounts:
    return request.app.state.ctx.accounts


CtxDep = Annotated[AppContext, Depends(get_ctx)]
AccountsDep = Annotated[Accounts, Depends(get_accounts)]


def optional_user(request: Request) -> Principal | None:
    """The signed-in user from a Bearer token or the session cookie, if any."""
    cached = getattr(request.state, "principal", "unset")
    if cached != "unset":
        return cached
    accounts: Accounts = request.app.state.ctx.accounts
    principal: Principal | None = None
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        principal = accounts.principal_for_token(auth[7:].strip())
        if principal is None:
            raise HTTPException(
                401, "invalid or revoked API token", headers={"WWW-Authenticate": "Bearer"}
            )
    elif "session" in request.scope:
        uid = request.session.get("uid")
        if uid is not None:
            found = accounts.session_user(int(uid))
            if found is not None and request.session.get("pwf") == found[1]:
                principal = found[0]
            else:  # user gone or disabled, or the password changed since this login
                request.session.clear()
    request.state.principal = principal
    return principal


OptionalUser = Annotated[Principal | None, Depends(optional_user)]


def current_user(user: OptionalUser) -> Principal:
    if user is None:
        raise HTTPException(401, "sign in required", headers={"WWW-Authenticate": "Bearer"})
    return user


CurrentUser = Annotated[Principal, Depends(current_user)]


def require(role: str):  # noqa: ANN201 - returns a FastAPI dependency
    """A dependency that allows ``role`` and every role above it."""

    def dep(user: CurrentUser) -> Principal:
        if not user.can(role):
            raise HTTPException(403, f"this needs the {role} role")
        return user

    dep.__name__ = f"require_{role}"
    return dep


def require_unless_setting(setting: str, role: str):  # noqa: ANN201 - a FastAPI dependency
    """``role`` or above, unless the boolean setting ``setting`` opens the route to all.

    For routes like ``/metrics`` that a deployment may choose to expose. Named
    ``require_<role>`` so the access table check sees the role it enforces.
    """

    def dep(request: Request, user: OptionalUser) -> Principal | None:
        if bool(getattr(request.app.state.ctx.settings, setting, False)):
            return user
        if user is None:
            raise HTTPException(401, "sign in required", headers={"WWW-Authenticate": "Bearer"})
        if not user.can(role):
            raise HTTPException(403, f"this needs the {role} role")
        return user

    dep.__name__ = f"require_{role}"
    return dep


def reader_access(request: Request, user: OptionalUser) -> Principal | None:
    """Reading is public when ``public_read`` is on; otherwise a reader is needed."""
    if user is None and not request.app.state.ctx.settings.public_read:
        raise HTTPException(401, "sign in required", headers={"WWW-Authenticate": "Bearer"})
    return user


ReaderDep = Annotated[Principal | None, Depends(reader_access)]
EditorUser = Annotated[Principal, Depends(require("editor"))]
AdminUser = Annotated[Principal, Depends(require("admin"))]
SuperUser = Annotated[Principal, Depends(require("superuser"))]


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


# --- re-authentication ---------------------------------------------------------------
CONFIRM_HEADER = "X-Confirm-Password"
CONFIRM_FIELD = "confirm_password"


async def _sent_password(request: Request) -> str | None:
    """The confirmation password from the header, a form field or a JSON field."""
    sent = request.headers.get(CONFIRM_HEADER.lower())
    if sent:
        return sent
    ctype = request.headers.get("content-type", "")
    if ctype.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        value = (await request.form()).get(CONFIRM_FIELD)
        return str(value) if value else None
    if ctype.startswith("application/json"):
        try:
            body = json.loads(await request.body() or b"null")
        except ValueError:
            return None
        if isinstance(body, dict) and isinstance(body.get(CONFIRM_FIELD), str):
            return body[CONFIRM_FIELD] or None
    return None


async def reauthenticated(request: Request, user: CurrentUser) -> Principal:
    """Ask for the current password again before a dangerous action (restore, delete-all).

    A stolen session cookie or API token alone is not enough to overwrite or wipe
    the library. Missing → 428, wrong → 403 (and it counts towards the lockout
    like a failed login), locked → 429. Every outcome is audited.
    """
    password = await _sent_password(request)
    ctx = request.app.state.ctx
    if not password:
        raise HTTPException(
            428,
            f"confirm this action with your current password (the {CONFIRM_HEADER} header, "
            f"or a {CONFIRM_FIELD!r} form or JSON field)",
        )
    try:
        await run_in_threadpool(ctx.accounts.confirm_password, user, password)
    except AuthError as exc:
        ctx.audit(
            "reauth_failed",
            username=user.username,
            target=request.url.path,
            client=client_ip(request),
            detail={"locked": exc.locked},
        )
        if exc.locked:
            raise HTTPException(429, str(exc)) from None
        raise HTTPException(403, "password confirmation failed") from None
    return user


ReauthDep = Annotated[Principal, Depends(reauthenticated)]


# --- rate limits -----------------------------------------------------------------------
def upload_rate_limit(request: Request, user: OptionalUser) -> None:
    """Per-client upload limit: by user when signed in, else by address (→ 429)."""
    key = f"user:{user.id}" if user is not None else f"ip:{client_ip(request)}"
    rate_limits(request.app).check("upload", key)


UploadRateLimit = Depends(upload_rate_limit)
