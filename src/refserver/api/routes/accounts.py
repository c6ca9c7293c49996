"""Accounts over HTTP: your API tokens; users and the audit log for superusers (JSON).

The web UI renders its own HTML pages on top of the same ``Accounts`` methods.
Request bodies are plain dicts checked by ``Accounts`` (never echoed back), so
a rejected password never appears in an error response.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Body, HTTPException, Query, Request

from refserver.api.deps import CtxDep, CurrentUser, SuperUser, client_ip
from refserver.storage.models import ApiToken, AuditEntry, User

router = APIRouter(tags=["accounts"])


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def token_public(tok: ApiToken) -> dict[str, Any]:
    return {
        "id": tok.id,
        "name": tok.name,
        "prefix": tok.prefix,
        "created_at": _iso(tok.created_at),
        "last_used": _iso(tok.last_used),
        "revoked": bool(tok.revoked),
    }


def user_public(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "username": user.username,
        "role": user.role,
        "is_active": bool(user.is_active),
        "locked": bool(user.locked_until and _naive(user.locked_until) > _naive(datetime.now())),
        "created_at": _iso(user.created_at),
        "last_login": _iso(user.last_login),
    }


def _naive(value: datetime) -> datetime:
    return value.replace(tzinfo=None)


def audit_public(entry: AuditEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "created_at": _iso(entry.created_at),
        "username": entry.username,
        "action": entry.action,
        "target": entry.target,
        "detail": entry.detail or {},
        "client": entry.client,
    }


# --- your own API tokens -------------------------------------------------------------
@router.post("/api/tokens", status_code=201)
def create_token(
    request: Request, ctx: CtxDep, user: CurrentUser, body: dict[str, Any] = Body(default={})
) -> dict[str, Any]:
    """A new personal API token; its value is shown only in this answer (stored hashed)."""
    name = str(body.get("name") or "api")[:128]
    token_id, token = ctx.accounts.create_token(user.id, name=name)
    ctx.audit(
        "token_create",
        username=user.username,
        target=str(token_id),
        client=client_ip(request),
        detail={"name": name},
    )
    tok = next(t for t in ctx.accounts.list_tokens(user.id) if t.id == token_id)
    return {**token_public(tok), "token": token, "token_type": "bearer"}


@router.get("/api/tokens")
def list_tokens(ctx: CtxDep, user: CurrentUser) -> dict[str, Any]:
    tokens = sorted(ctx.accounts.list_tokens(user.id), key=lambda t: t.id, reverse=True)
    return {"tokens": [token_public(t) for t in tokens]}


@router.delete("/api/tokens/{token_id}")
def revoke_token(token_id: int, request: Request, ctx: CtxDep, user: CurrentUser) -> dict[str, Any]:
    """Revoke one of your tokens; it answers 401 from the next request on."""
    if not ctx.accounts.revoke_token(user.id, token_id):
        raise HTTPException(404, f"no token {token_id}")
    ctx.audit(
        "token_revoke", username=user.username, target=str(token_id), client=client_ip(request)
    )
    return {"id": token_id, "revoked": True}


# --- users (superusers) ----------------------------------------------------------------
def _user_or_404(ctx: Any, username: str) -> User:
    user = ctx.accounts.get_user(username)
    if user is None:
        raise HTTPException(404, f"no user {username}")
    return user


@router.get("/admin/users")
def list_users(ctx: CtxDep, _: SuperUser) -> dict[str, Any]:
    return {"users": [user_public(u) for u in ctx.accounts.list()]}


@router.post("/admin/users", status_code=201)
def create_user(
    request: Request, ctx: CtxDep, admin: SuperUser, body: dict[str, Any] = Body(...)
) -> dict[str, Any]:
    """Create an account: ``{"username", "password", "role"}`` (role defaults to reader)."""
    username = str(body.get("username") or "")
    role = str(body.get("role") or "reader")
    try:
        ctx.accounts.create(username, str(body.get("password") or ""), role)
    except ValueError as exc:
        raise HTTPException(409 if "exists" in str(exc) else 400, str(exc)) from None
    ctx.audit(
        "user_create",
        username=admin.username,
        target=username,
        client=client_ip(request),
        detail={"role": role},
    )
    return user_public(_user_or_404(ctx, username))


def _change(
    request: Request, ctx: Any, admin: Any, username: str, action: str, detail: dict[str, Any]
) -> dict[str, Any]:
    ctx.audit(
        action, username=admin.username, target=username, client=client_ip(request), detail=detail
    )
    return user_public(_user_or_404(ctx, username))


@router.post("/admin/users/{username}/disable")
def disable_user(username: str, request: Request, ctx: CtxDep, admin: SuperUser) -> dict[str, Any]:
    """Disable an account and revoke its tokens (the last superuser cannot be disabled)."""
    _user_or_404(ctx, username)
    try:
        ctx.accounts.set_active(username, False)
    except ValueError as exc:
        raise HTTPException(409, str(exc)) from None
    return _change(request, ctx, admin, username, "user_disable", {})


@router.post("/admin/users/{username}/enable")
def enable_user(username: str, request: Request, ctx: CtxDep, admin: SuperUser) -> dict[str, Any]:
    _user_or_404(ctx, username)
    ctx.accounts.set_active(username, True)
    return _change(request, ctx, admin, username, "user_enable", {})


@router.post("/admin/users/{username}/role")
def set_role(
    username: str,
    request: Request,
    ctx: CtxDep,
    admin: SuperUser,
    body: dict[str, Any] = Body(...),
) -> dict[str, Any]:
    """Change a role: ``{"role": "editor"}`` (the last superuser keeps theirs)."""
    before = _user_or_404(ctx, username).role
    role = str(body.get("role") or "")
    try:
        ctx.accounts.set_role(username, role)
    except ValueError as exc:
        raise HTTPException(409 if "last" in str(exc) else 400, str(exc)) from None
    return _change(request, ctx, admin, username, "user_role", {"from": before, "to": role})


@router.post("/admin/users/{username}/password")
def reset_password(
    username: str,
    request: Request,
    ctx: CtxDep,
    admin: SuperUser,
    body: dict[str, Any] = Body(...),
) -> dict[str, Any]:
    """Set another user's password (``{"password"}``); signs out their browser sessions."""
    _user_or_404(ctx, username)
    try:
        ctx.accounts.set_password(username, str(body.get("password") or ""))
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None
    return _change(request, ctx, admin, username, "user_passwd", {})


# --- audit log (superusers) ------------------------------------------------------------
@router.get("/admin/audit")
def audit_log(
    ctx: CtxDep,
    _: SuperUser,
    limit: int = Query(50, ge=1, le=1000),
    offset: int = Query(0, ge=0),
    action: str | None = None,
    username: str | None = None,
) -> dict[str, Any]:
    """Who did what and when, newest first."""
    rows, total = ctx.accounts.audit_entries(
        limit=limit, offset=offset, action=action, username=username
    )
    return {
        "entries": [audit_public(e) for e in rows],
        "total": total,
        "limit": limit,
        "offset": offset,
    }
