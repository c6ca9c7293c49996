"""The FastAPI application: one process serving the API, workers and scheduler."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import HTTPException
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.middleware.sessions import SessionMiddleware

from refserver import __version__
from refserver.api.routes import auth, jobs, papers, system, upload
from refserver.auth.csrf import verify_csrf
from refserver.config import Settings, get_settings
from refserver.context import AppContext
from refserver.ingest.intake import sweep_staging
from refserver.storage.db import WritesPaused
from refserver.storage.vectors import ChromaBusy
from refserver.web.templating import STATIC_DIR

log = logging.getLogger(__name__)

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self'; frame-ancestors 'none'",
}


def create_app(
    settings: Settings | None = None,
    *,
    start_workers: bool = True,
    start_scheduler: bool | None = None,
) -> FastAPI:
    settings = settings or get_settings()
    settings.check_secure()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx = AppContext(settings)
        app.state.ctx = ctx
        generated = ctx.accounts.ensure_superuser(settings.admin_user, settings.admin_password)
        if generated:
            msg = (
                f"Created superuser {settings.admin_user!r} with password: {generated}\n"
                "It is shown once: sign in and change it, or set REFSERVER_ADMIN_PASSWORD."
            )
            print(msg, flush=True)
            log.warning(
                "created the first superuser %r (password printed once)", settings.admin_user
            )
        # Before serving nothing is half-staged, unless other processes share the folder.
        sweep_staging(ctx, min_age_seconds=0 if ctx.deployment_mode == "embedded" else 3600)
        for hook in app.state.startup_hooks:
            hook(ctx)
        if start_workers:
            ctx.start_workers()
        sched = settings.scheduler_enabled if start_scheduler is None else start_scheduler
        if sched and "start_scheduler" in ctx.extras:
            ctx.extras["start_scheduler"](ctx)
        try:
            yield
        finally:
            ctx.close()

    app = FastAPI(
        title="RefServer",
        version=__version__,
        description="Self-hosted server for a library of scientific-paper PDFs.",
        lifespan=lifespan,
        dependencies=[Depends(verify_csrf)],
    )
    app.state.settings = settings
    app.state.startup_hooks = []
    app.add_middleware(
        SessionMiddleware,
        secret_key=settings.secret_key,
        session_cookie="refserver_session",
        same_site="lax",
        https_only=settings.cookie_secure,
        max_age=14 * 24 * 3600,
    )

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        if response.headers.get("content-type", "").startswith("text/html"):
            for k, v in SECURITY_HEADERS.items():
                response.headers.setdefault(k, v)
        return response

    @app.exception_handler(WritesPaused)
    async def _paused(_: Request, exc: WritesPaused) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(ChromaBusy)
    async def _busy(_: Request, exc: ChromaBusy) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal server error"}, status_code=500)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> Any:
        # Browsers hitting an admin page without a session go to the login page.
        if (
            exc.status_code == 401
            and request.url.path.startswith("/admin")
            and "text/html" in request.headers.get("accept", "")
        ):
            return RedirectResponse("/admin/login", status_code=302)
        return JSONResponse(
            {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
        )

    for module in (system, upload, jobs, papers, auth):
        app.include_router(module.router)
    _include_optional(app)
    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")
    return app


def _include_optional(app: FastAPI) -> None:
    """Routers of areas that register themselves (search, backups, checks, UI)."""
    import importlib

    for name in (
        "search",
        "backup",
        "consistency",
        "recovery",
        "bulk",
        "export",
        "accounts",
        "web",
    ):
        try:
            module = importlib.import_module(f"refserver.api.routes.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"refserver.api.routes.{name}":
                continue
            raise
        app.include_router(module.router)
        hook = getattr(module, "on_startup", None)
        if hook is not None:
            app.state.startup_hooks.append(hook)
