"""Signing in and out: session cookie for browsers, tokens for API clients."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from refserver.api.deps import CtxDep, CurrentUser, OptionalUser, client_ip
from refserver.auth.ratelimit import rate_limits
from refserver.auth.users import AuthError
from refserver.web.templating import templates

router = APIRouter(tags=["auth"])


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get(
        "accept", ""
    ) and "text/html" not in request.headers.get("accept", "")


@router.get("/admin/login", response_class=HTMLResponse, include_in_schema=False)
def login_page(request: Request) -> Response:
    return templates.TemplateResponse(request, "login.html", {"error": None, "username": ""})


def _throttle(request: Request, username: str) -> None:
    """Login rate limits, checked before the (deliberately slow) password hash."""
    ip = client_ip(request)
    limiter = rate_limits(request.app)
    try:
        limiter.check("login_ip", ip)
        limiter.check("login", ip, username.lower())
    except HTTPException:
        request.app.state.ctx.audit(
            "login_throttled", username=username[:128], client=ip, detail={}
        )
        raise


@router.post("/admin/login", response_model=None)
def login(
    request: Request, ctx: CtxDep, username: str = Form(...), password: str = Form(...)
) -> Response:
    try:
        _throttle(request, username)
    except HTTPException as exc:
        if _wants_json(request):
            raise
        return templates.TemplateResponse(
            request,
            "login.html",
            {"error": exc.detail, "username": username},
            status_code=429,
            headers=exc.headers,
        )
    try:
        user = ctx.accounts.authenticate(username, password)
    except AuthError as exc:
        ctx.audit(
            "login_failed",
            username=username,
            client=client_ip(request),
            detail={"reason": str(exc)},
        )
        if _wants_json(request):
            return JSONResponse({"detail": str(exc)}, status_code=429 if exc.locked else 401)
        return templates.TemplateResponse(
            request,
            "login.html",
            {"error": str(exc), "username": username},
            status_code=429 if exc.locked else 401,
        )
    ctx.audit("login", username=user.username, client=client_ip(request))
    if _wants_json(request):
        token_id, token = ctx.accounts.create_token(user.id, name="login")
        return JSONResponse(
            {
                "access_token": token,
                "token_type": "bearer",
                "token_id": token_id,
                "username": user.username,
                "role": user.role,
            }
        )
    found = ctx.accounts.session_user(user.id)
    request.session.clear()  # a fresh session: no fixation, a new CSRF token
    request.session["uid"] = user.id
    request.session["pwf"] = found[1] if found else ""
    return RedirectResponse("/admin/dashboard", status_code=302)


@router.post("/api/login")
def api_login(
    request: Request, ctx: CtxDep, credentials: dict[str, Any] = Body(...)
) -> dict[str, Any]:
    username, password = str(credentials.get("username", "")), str(credentials.get("password", ""))
    _throttle(request, username)
    try:
        user = ctx.accounts.authenticate(username, password)
    except AuthError as exc:
        ctx.audit(
            "login_failed",
            username=username,
            client=client_ip(request),
            detail={"reason": str(exc)},
        )
        raise HTTPException(429 if exc.locked else 401, str(exc)) from None
    token_id, token = ctx.accounts.create_token(
        user.id, name=str(credentials.get("token_name", "api"))
    )
    ctx.audit(
        "login", username=user.username, client=client_ip(request), detail={"token_id": token_id}
    )
    return {
        "access_token": token,
        "token_type": "bearer",
        "token_id": token_id,
        "username": user.username,
        "role": user.role,
    }


@router.post("/admin/logout", response_model=None)
def logout(request: Request, ctx: CtxDep, user: OptionalUser) -> Response:
    if user is not None:
        ctx.audit("logout", username=user.username, client=client_ip(request))
    request.session.clear()
    if _wants_json(request):
        return JSONResponse({"signed_out": True})
    return RedirectResponse("/admin/login", status_code=302)


@router.get("/api/me")
def me(user: CurrentUser) -> dict[str, Any]:
    return {"id": user.id, "username": user.username, "role": user.role}


@router.post("/api/me/password")
def change_password(
    request: Request, ctx: CtxDep, user: CurrentUser, body: dict[str, Any] = Body(...)
) -> dict[str, Any]:
    """Change your own password (needs the current one); signs out other browser sessions."""
    current, new = str(body.get("current_password", "")), str(body.get("new_password", ""))
    try:
        ctx.accounts.change_password(user, current, new)
    except AuthError as exc:
        ctx.audit("password_change_failed", username=user.username, client=client_ip(request))
        raise HTTPException(429 if exc.locked else 400, "current password is wrong") from None
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None
    ctx.audit("password_change", username=user.username, client=client_ip(request))
    if "session" in request.scope and request.session.get("uid") == user.id:
        found = ctx.accounts.session_user(user.id)  # keep this browser signed in
        request.session["pwf"] = found[1] if found else ""
    return {"changed": True}
