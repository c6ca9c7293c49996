"""Dependency aliases that keep routes thin (full-stack-fastapi-template style)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request

from refserver.auth.users import Accounts, Principal
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
            principal = accounts.get(int(uid))
            if principal is None:
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
