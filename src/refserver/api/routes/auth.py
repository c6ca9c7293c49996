"""Signing in and out: session cookie for browsers, tokens for API clients."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from refserver.api.deps import CtxDep, CurrentUser, client_ip
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


@router.post("/admin/login", response_model=None)
def login(
    request: Request, ctx: CtxDep, username: str = Form(...), password: str = Form(...)
) -> Response:
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
    request.session.clear()
    request.session["uid"] = user.id
    return RedirectResponse("/admin/dashboard", status_code=302)


@router.post("/api/login")
def api_login(
    request: Request, ctx: CtxDep, credentials: dict[str, Any] = Body(...)
) -> dict[str, Any]:
    username, password = str(credentials.get("username", "")), str(credentials.get("password", ""))
    try:
        user = ctx.accounts.authenticate(username, password)
    except AuthError as exc:
        ctx.audit("login_failed", username=username, client=client_ip(request))
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
def logout(request: Request) -> Response:
    request.session.clear()
    return RedirectResponse("/admin/login", status_code=302)


@router.get("/api/me")
def me(user: CurrentUser) -> dict[str, Any]:
    return {"id": user.id, "username": user.username, "role": user.role}
