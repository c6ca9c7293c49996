"""Job status, the queue and cancellation."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Query

from refserver.api.deps import CtxDep, EditorUser, ReaderDep
from refserver.api.schemas import job_public

router = APIRouter(tags=["jobs"])


@router.get("/job/{job_id}")
def get_job(job_id: str, ctx: CtxDep, _: ReaderDep) -> dict[str, Any]:
    job = ctx.jobs.get(job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id}")
    return job_public(job)


@router.get("/jobs")
def list_jobs(
    ctx: CtxDep,
    _: ReaderDep,
    status: str | None = None,
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0),
) -> dict[str, Any]:
    jobs, total = ctx.jobs.list(status=status, limit=limit, offset=offset)
    return {"jobs": [job_public(j) for j in jobs], "total": total, "limit": limit, "offset": offset}


@router.get("/queue/status")
def queue_status(ctx: CtxDep, _: ReaderDep) -> dict[str, Any]:
    counts = ctx.jobs.counts()
    active, _total = ctx.jobs.list(status="processing", limit=20)
    return {
        "workers_running": ctx.queue.running,
        "workers": ctx.queue.workers,
        "queue_backend": ctx.settings.queue_backend,
        "pending_messages": ctx.queue.pending(),
        "counts": counts,
        "queued": counts["queued"],
        "processing": counts["processing"],
        "completed": counts["completed"],
        "failed": counts["failed"],
        "cancelled": counts["cancelled"],
        "active_jobs": [job_public(j) for j in active],
    }


@router.post("/queue/cancel/{job_id}")
def cancel_job(job_id: str, ctx: CtxDep, user: EditorUser) -> dict[str, Any]:
    job = ctx.jobs.request_cancel(job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id}")
    return {
        "job_id": job_id,
        "status": job.status,
        "cancel_requested": True,
        "message": "cancelled"
        if job.status == "cancelled"
        else (
            "already finished"
            if job.status in ("completed", "failed")
            else "will stop at the next step"
        ),
    }


@router.post("/job/{job_id}/retry")
def retry_job(job_id: str, ctx: CtxDep, user: EditorUser) -> dict[str, Any]:
    existing = ctx.jobs.get(job_id)
    if existing is None:
        raise HTTPException(404, f"no job {job_id}")
    job = ctx.jobs.reset_for_retry(job_id)
    if job is None:
        raise HTTPException(
            409, f"job is {existing.status}; only failed or cancelled jobs can be retried"
        )
    ctx.queue.enqueue(job_id, job.priority)
    return {"job_id": job_id, "status": "queued"}
