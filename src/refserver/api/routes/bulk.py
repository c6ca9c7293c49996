"""Batch upload (``POST /upload/batch``), batch status (``GET /batch/{id}``), consume folder."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import APIRouter, File, HTTPException, Request, UploadFile
from fastapi.concurrency import run_in_threadpool

from refserver.api.deps import CtxDep, EditorUser, ReaderDep
from refserver.auth.ratelimit import SecurityLimits, rate_limits
from refserver.context import AppContext
from refserver.ingest.bulk import batch_status
from refserver.ingest.intake import check_untrusted, safe_label, stage_stream, submit
from refserver.ingest.validate import PdfRejected

log = logging.getLogger(__name__)
router = APIRouter(tags=["bulk"])

MAX_FILES = 1000


def _accept_one(
    ctx: AppContext, upload: UploadFile, batch_id: str, username: str, limits: SecurityLimits
) -> dict[str, Any]:
    """Stage and queue one file; a rejected file still gets a (failed) job with its reason."""
    label = safe_label(upload.filename)
    try:
        staged = stage_stream(ctx, upload.file, upload.filename)
        check_untrusted(
            ctx, staged, timeout=limits.sandbox_timeout, memory_mb=limits.sandbox_memory_mb
        )
        sub = submit(ctx, staged, username=username, batch_id=batch_id)
        return {
            "job_id": sub.job_id,
            "filename": label,
            "status": sub.status,
            "message": sub.message,
            "paper_id": sub.paper_id,
        }
    except PdfRejected as exc:
        job_id = ctx.jobs.create(
            filename=label, batch_id=batch_id, created_by=username, status="queued"
        )
        ctx.jobs.step_failed(job_id, "validate", exc.reason)
        ctx.jobs.finish(job_id, "failed", error=exc.reason)
        return {
            "job_id": job_id,
            "filename": label,
            "status": "failed",
            "message": exc.reason,
            "paper_id": None,
        }


@router.post("/upload/batch")
async def upload_batch(
    request: Request, ctx: CtxDep, user: EditorUser, files: list[UploadFile] = File(...)
) -> dict[str, Any]:
    """Many files → one batch id with one ingest job per file on the queue."""
    if not files:
        raise HTTPException(400, "no files")
    if len(files) > MAX_FILES:
        raise HTTPException(400, f"at most {MAX_FILES} files per batch")
    limiter = rate_limits(request.app)
    limiter.check("upload", f"user:{user.id}", cost=len(files))  # each file counts
    batch_id = f"batch-{uuid.uuid4().hex[:20]}"
    jobs = []
    for f in files:
        jobs.append(
            await run_in_threadpool(_accept_one, ctx, f, batch_id, user.username, limiter.config)
        )
    ctx.audit(
        "upload_batch",
        username=user.username,
        target=batch_id,
        detail={"files": len(jobs), "rejected": sum(j["status"] == "failed" for j in jobs)},
    )
    return {"batch_id": batch_id, "jobs": jobs, "total": len(jobs)}


@router.get("/batch/{batch_id}")
def get_batch(batch_id: str, ctx: CtxDep, _: ReaderDep) -> dict[str, Any]:
    """Totals, per-file status, files/s, pages/s and ETA (CLI bulk batches too)."""
    status = batch_status(ctx, batch_id)
    if status is None:
        raise HTTPException(404, f"no batch {batch_id}")
    return status


def on_startup(ctx: AppContext) -> None:
    """Start the consume-folder watcher (``<data_dir>/consume`` unless configured)."""
    if not ctx.settings.consume_enabled:
        return
    from refserver.ingest.watch import ConsumeFolder

    watcher = ConsumeFolder(ctx, interval=ctx.settings.consume_interval)
    ctx.extras["consume"] = watcher  # AppContext.close() stops it first
    watcher.start()
