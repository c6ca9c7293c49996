"""Consistency routes (thin: the logic is in refserver.safety.consistency).

check, summary and history need an admin; fix needs a superuser. Every check run
through here is recorded in the history (``CheckRun``).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from refserver.api.deps import AdminUser, CtxDep, SuperUser
from refserver.safety import consistency

router = APIRouter(prefix="/admin/consistency", tags=["consistency"])


def on_startup(ctx: Any) -> None:
    """Announce the checker (``/health`` features) and register its job kind."""
    ctx.extras["consistency"] = consistency
    consistency.register_jobs(ctx)


def _queued(
    ctx: Any, response: Response, action: str, params: dict[str, Any], user: Any
) -> dict[str, Any]:
    try:
        job_id = consistency.submit_job(ctx, action, params, user.username)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None
    response.status_code = 202
    return {"job_id": job_id, "status": "queued", "action": action}


@router.get("/summary")
def get_summary(ctx: CtxDep, user: AdminUser) -> dict[str, Any]:
    return consistency.summary(ctx)


@router.get("/check")
@router.post("/check")
def run_check(
    ctx: CtxDep,
    user: AdminUser,
    response: Response,
    deep: bool = Query(False, description="Also compare the stored embeddings themselves."),
    hash_files: bool = Query(True, description="Hash every PDF (else compare sizes)."),
    background: bool = Query(False, description="Run as a job; answers 202 with its id."),
) -> dict[str, Any]:
    if background:
        params = {"deep": deep, "hash_files": hash_files}
        return _queued(ctx, response, "check", params, user)
    return consistency.run_check(ctx, deep=deep, hash_files=hash_files, username=user.username)


def _split(values: list[str] | None) -> list[str]:
    out: list[str] = []
    for v in values or []:
        out.extend(x.strip() for x in v.split(",") if x.strip())
    return out


@router.post("/fix")
async def run_fix(
    request: Request,
    response: Response,
    ctx: CtxDep,
    user: SuperUser,
    types: list[str] | None = Query(None, description="Issue types to repair (default all)."),
    rebuild_index: bool = Query(False, description="Rebuild the whole index from SQLite."),
    dry_run: bool = Query(False, description="Only say what would be repaired."),
    background: bool = Query(False, description="Run as a job; answers 202 with its id."),
) -> dict[str, Any]:
    """Run a fresh check, then the safe repairs. Body: a list of types or an object."""
    chosen = _split(types)
    raw = await request.body()
    if raw.strip():
        try:
            body = json.loads(raw)
        except ValueError:
            raise HTTPException(400, "the body must be JSON") from None
        if isinstance(body, dict):
            body_types = body.get("types")
            rebuild_index = bool(body.get("rebuild_index", rebuild_index))
            dry_run = bool(body.get("dry_run", dry_run))
            background = bool(body.get("background", background))
        else:
            body_types = body
        if body_types is not None:
            if not isinstance(body_types, list) or not all(isinstance(t, str) for t in body_types):
                raise HTTPException(400, "types must be a list of issue type names")
            chosen.extend(body_types)
    if background:
        params = {"types": chosen or None, "rebuild": rebuild_index, "dry_run": dry_run}
        return _queued(ctx, response, "fix", params, user)
    try:
        report = await run_in_threadpool(
            consistency.fix,
            ctx,
            chosen or None,
            rebuild_index,
            dry_run=dry_run,
            username=user.username,
        )
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None
    return report.to_dict()


@router.get("/history")
def get_history(
    ctx: CtxDep,
    user: AdminUser,
    limit: int = Query(20, ge=1, le=200),
    kind: str | None = Query(None, pattern="^(check|fix)$"),
) -> dict[str, Any]:
    items = consistency.history(ctx.db, limit=limit, kind=kind)
    return {"items": items, "count": len(items)}
