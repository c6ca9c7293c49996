"""Backup API: trigger, status, history, verify, restore, cleanup, health-check.

Parameters are accepted as query parameters and as form fields (and, for the
restore body, as JSON); booleans as true/false/True/False/1/0. Trigger, verify,
status and history need an admin; restore and cleanup need the superuser.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from starlette.concurrency import run_in_threadpool

from refserver.api.deps import AdminUser, CtxDep, SuperUser, reauthenticated
from refserver.safety import retention, service
from refserver.safety.backup import BackupError, ChainGap, engine_of
from refserver.safety.manifest import ManifestError, valid_id
from refserver.safety.restore import NotFound, TargetRefused, confine_target, parse_at, resolve
from refserver.safety.service import (
    library_bytes,
    record_public,
    register_jobs,
    scheduled_jobs,
    status_public,
    submit_backup,
)
from refserver.safety.verify import VerificationFailed

router = APIRouter(prefix="/admin/backup", tags=["backup"])

TRUE = {"true", "1", "yes", "on"}
FALSE = {"false", "0", "no", "off"}


def on_startup(ctx: Any) -> None:
    """Share one engine per process and register the backup/restore job kinds."""
    engine = register_jobs(ctx)
    try:
        engine.sync_records()
    except Exception:  # an index only; manifests stay authoritative
        import logging

        logging.getLogger(__name__).exception("could not index backups from manifests")


async def _params(request: Request) -> dict[str, Any]:
    """Query parameters overlaid with form fields or a JSON object body."""
    values: dict[str, Any] = dict(request.query_params)
    ctype = request.headers.get("content-type", "")
    if ctype.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()
        values.update({k: v for k, v in form.items() if isinstance(v, str)})
    elif ctype.startswith("application/json"):
        raw = await request.body()
        if raw.strip():
            try:
                body = json.loads(raw)
            except json.JSONDecodeError:
                raise HTTPException(400, "the body is not valid JSON") from None
            if not isinstance(body, dict):
                raise HTTPException(400, "the JSON body must be an object")
            values.update(body)
    values.pop("csrf_token", None)
    return values


def _bool(values: dict[str, Any], name: str, default: bool) -> bool:
    v = values.get(name)
    if v is None or v == "":
        return default
    if isinstance(v, bool):
        return v
    text = str(v).strip().lower()
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise HTTPException(422, f"{name} must be true or false (got {v!r})")


def _int(values: dict[str, Any], name: str, default: int | None, lo: int = 0) -> int | None:
    v = values.get(name)
    if v is None or v == "":
        return default
    try:
        n = int(v)
    except (TypeError, ValueError):
        raise HTTPException(422, f"{name} must be an integer (got {v!r})") from None
    if n < lo:
        raise HTTPException(422, f"{name} must be at least {lo}")
    return n


@router.post("/trigger")
async def trigger(request: Request, ctx: CtxDep, user: AdminUser) -> dict[str, Any]:
    p = await _params(request)
    unified = _bool(p, "unified", False)
    kind = str(p.get("backup_type") or p.get("type") or "full").strip().lower()
    if kind not in ("snapshot", "full", "incremental"):
        raise HTTPException(422, "backup_type must be snapshot, full or incremental")
    params = {
        "kind": kind,
        "compress": _bool(p, "compress", True),
        "description": str(p.get("description") or ""),
        "retention_days": _int(p, "retention_days", None),
        "unified": unified,
    }
    try:
        return await run_in_threadpool(submit_backup, ctx, params, user.username)
    except ChainGap as exc:
        raise HTTPException(409, str(exc)) from None
    except BackupError as exc:
        raise HTTPException(409 if "no verified full" in str(exc) else 400, str(exc)) from None


@router.get("/status")
async def status(ctx: CtxDep, _: AdminUser) -> dict[str, Any]:
    return await run_in_threadpool(status_public, ctx)


@router.get("/history")
async def history(request: Request, ctx: CtxDep, _: AdminUser) -> dict[str, Any]:
    p = dict(request.query_params)
    limit = _int(p, "limit", 50, 1) or 50
    offset = _int(p, "offset", 0, 0) or 0
    kind = p.get("type") or p.get("backup_type")
    manifests = await run_in_threadpool(engine_of(ctx).manifests)
    if kind:
        manifests = [m for m in manifests if m.kind == kind]
    newest = list(reversed(manifests))
    return {
        "backups": [record_public(m) for m in newest[offset : offset + min(limit, 1000)]],
        "total": len(newest),
        "limit": limit,
        "offset": offset,
    }


@router.get("/{backup_id}")
async def show(backup_id: str, ctx: CtxDep, _: AdminUser) -> dict[str, Any]:
    engine = engine_of(ctx)
    if not valid_id(backup_id):
        raise HTTPException(404, f"no backup {backup_id}")
    try:
        m = engine.get(backup_id)
    except ManifestError:
        raise HTTPException(404, f"no backup {backup_id}") from None
    return {**record_public(m), "manifest": m.to_dict()}


@router.post("/verify/{backup_id}")
async def verify(backup_id: str, ctx: CtxDep, user: AdminUser) -> dict[str, Any]:
    engine = engine_of(ctx)
    if not valid_id(backup_id) or not engine.exists(backup_id):
        raise HTTPException(404, f"no backup {backup_id}")
    result = await run_in_threadpool(engine.verify, backup_id)
    ctx.audit("backup.verify", username=user.username, target=backup_id, detail={"ok": result.ok})
    return result.to_dict()


async def _restore(request: Request, ctx: Any, user: Any, backup_id: str | None) -> dict[str, Any]:
    from refserver.safety.restore import restore

    p = await _params(request)
    backup_id = backup_id or (str(p["backup_id"]) if p.get("backup_id") else None)
    target_path = str(p["target_path"]) if p.get("target_path") else None
    at_raw = p.get("at") or None
    engine = engine_of(ctx)
    try:
        at = parse_at(at_raw)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None
    if backup_id is None and at is None:
        raise HTTPException(400, "give backup_id (or at=TIMESTAMP)")
    if backup_id is not None and (not valid_id(backup_id) or not engine.exists(backup_id)):
        raise HTTPException(404, f"no backup {backup_id}")
    if target_path is not None:
        try:
            confine_target(ctx.settings.restore_dir, target_path)
        except TargetRefused as exc:
            raise HTTPException(400, str(exc)) from None
    try:
        target = resolve(engine, backup_id, at)
    except NotFound as exc:
        raise HTTPException(404, str(exc)) from None
    except ChainGap as exc:
        raise HTTPException(409, str(exc)) from None
    if target_path is None:
        # Overwriting the live library: confirm the password (428 missing, 403 wrong).
        await reauthenticated(request, user)
    if library_bytes(ctx) >= service.SYNC_LIMIT_BYTES:
        params = {"backup_id": target.id, "at": None, "target_path": target_path}
        job_id = ctx.jobs.create(
            kind="restore", filename=target.id, params=params, created_by=user.username
        )
        ctx.queue.enqueue(job_id, "urgent")
        return {"backup_id": target.id, "status": "queued", "job_id": job_id}
    try:
        out = await run_in_threadpool(
            lambda: restore(engine, target.id, target_path=target_path, username=user.username)
        )
    except VerificationFailed as exc:
        raise HTTPException(
            409, {"message": f"the backup failed verification: {exc}", **exc.result.to_dict()}
        ) from None
    except ChainGap as exc:
        raise HTTPException(409, str(exc)) from None
    except TargetRefused as exc:
        raise HTTPException(400, str(exc)) from None
    except BackupError as exc:
        raise HTTPException(409, str(exc)) from None
    return out


@router.post("/restore/{backup_id}")
async def restore_by_path(
    backup_id: str, request: Request, ctx: CtxDep, user: SuperUser
) -> dict[str, Any]:
    return await _restore(request, ctx, user, backup_id)


@router.post("/restore")
async def restore_by_body(request: Request, ctx: CtxDep, user: SuperUser) -> dict[str, Any]:
    return await _restore(request, ctx, user, None)


@router.delete("/cleanup")
async def cleanup(request: Request, ctx: CtxDep, user: SuperUser) -> dict[str, Any]:
    p = await _params(request)
    dry_run = _bool(p, "dry_run", False)
    defaults = retention.Policy()
    policy = retention.Policy(
        last=_int(p, "keep_last", defaults.last) or 0,
        hourly=_int(p, "keep_hourly", defaults.hourly) or 0,
        daily=_int(p, "keep_daily", defaults.daily) or 0,
        weekly=_int(p, "keep_weekly", defaults.weekly) or 0,
        monthly=_int(p, "keep_monthly", defaults.monthly) or 0,
    )
    out = await run_in_threadpool(
        lambda: retention.apply(engine_of(ctx), policy, dry_run=dry_run).to_dict()
    )
    if not dry_run:
        ctx.audit(
            "backup.cleanup",
            username=user.username,
            detail={"deleted": out["deleted"], "freed_bytes": out["freed_bytes"]},
        )
    return {"status": "completed", **out}


@router.post("/health-check")
async def health_check(ctx: CtxDep, _: AdminUser) -> dict[str, Any]:
    running, jobs = scheduled_jobs(ctx)
    st = await run_in_threadpool(status_public, ctx)
    return {
        "status": st["status"],
        "timestamp": datetime.now(UTC).isoformat(),
        "backup_status": {
            "scheduler_running": running,
            "total_backups": st["sqlite"]["total_backups"],
            "scheduled_jobs": jobs,
            "latest_backup": st["last_backup"],
            "unified_backup_available": st["unified_backup_available"],
        },
    }
