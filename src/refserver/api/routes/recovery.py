"""Disaster-recovery routes: readiness, drills on demand, the schedule, Prometheus metrics.

``/metrics`` is **not public by default**: it reveals the library's size, backup
ages and failures. Prometheus authenticates with an admin's API token
(``authorization: {type: Bearer, credentials: <token>}`` in the scrape config).
``REFSERVER_METRICS_PUBLIC=true`` opens it for a scraper on a trusted network.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from refserver.api.deps import AdminUser, CtxDep, OptionalUser, client_ip
from refserver.safety import drill, readiness
from refserver.safety.scheduler import recent_runs, scheduler_state, start_scheduler

log = logging.getLogger(__name__)
router = APIRouter(tags=["disaster-recovery"])


@router.get("/admin/disaster-recovery/status")
def dr_status(ctx: CtxDep, _: AdminUser) -> dict[str, Any]:
    return readiness.assess(ctx)


@router.post("/admin/disaster-recovery/test")
async def dr_test(
    request: Request,
    ctx: CtxDep,
    user: AdminUser,
    backup_id: str | None = Query(
        None, description="Drill this backup (default: the newest chain)."
    ),
    wait: bool = Query(False, description="Run now and answer with the result instead of a job."),
) -> dict[str, Any]:
    """Run a restore drill: as a job (default), or synchronously with ``wait=true``."""
    if backup_id is not None:
        from refserver.safety.manifest import valid_id

        if not valid_id(backup_id):
            raise HTTPException(400, f"not a backup id: {backup_id!r}")
    ctx.audit("dr.drill", username=user.username, target=backup_id, client=client_ip(request))
    if wait:
        result = await run_in_threadpool(drill.run_drill, ctx, backup_id)
        return {"job_id": None, "status": "completed" if result["passed"] else "failed", **result}
    job_id = ctx.jobs.create(
        kind="drill",
        filename="restore drill",
        params={"backup_id": backup_id},
        created_by=user.username,
    )
    ctx.queue.enqueue(job_id, "normal")
    return {"job_id": job_id, "status": "queued"}


@router.get("/admin/scheduler")
def scheduler_view(
    ctx: CtxDep, _: AdminUser, limit: int = Query(50, ge=1, le=500)
) -> dict[str, Any]:
    from refserver.safety.scheduler import planned_jobs

    handle = ctx.scheduler
    state = scheduler_state(ctx)
    jobs = handle.jobs() if hasattr(handle, "jobs") else planned_jobs(ctx.settings)
    return {**state, "jobs": jobs, "recent_runs": recent_runs(ctx.db, limit)}


@router.get("/metrics")
def metrics(ctx: CtxDep, user: OptionalUser) -> Response:
    if not bool(getattr(ctx.settings, "metrics_public", False)):
        if user is None:
            raise HTTPException(401, "sign in required", headers={"WWW-Authenticate": "Bearer"})
        if not user.can("admin"):
            raise HTTPException(403, "this needs the admin role")
    body, content_type = readiness.render_metrics(ctx)
    return Response(content=body, media_type=content_type)


def _drill_job(ctx: Any, job_id: str) -> None:
    """The ``drill`` job kind: a drill with progress on its job record (DESIGN.md §7)."""
    job = ctx.jobs.start(job_id)
    if job is None:
        return
    params = job.params or {}

    def progress(stage: str, fraction: float) -> None:
        ctx.jobs.step_started(job_id, stage, round(100 * fraction, 1))

    result = drill.run_drill(ctx, params.get("backup_id"), progress=progress)
    summary = {
        k: result.get(k)
        for k in ("passed", "backup_id", "check_run_id", "chain", "steps", "duration_seconds")
    }
    if result["passed"]:
        ctx.jobs.finish(job_id, "completed", summary=summary)
    else:
        ctx.jobs.finish(job_id, "failed", error=result.get("error"), summary=summary)


def on_startup(ctx: Any) -> None:
    """Offer the scheduler to app.py and register the drill job kind."""
    ctx.extras["start_scheduler"] = start_scheduler
    ctx.queue.register("drill", lambda job_id: _drill_job(ctx, job_id))
