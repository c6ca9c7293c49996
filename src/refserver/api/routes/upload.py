"""Uploads: queued (``/upload``) and synchronous (``/process``).

Every upload is rate limited per client, staged under a random name (the
client's filename is only a label) and checked in the PDF sandbox (time and
memory capped child process) before a job exists; rejections are audited.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, File, HTTPException, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool

from refserver.api.deps import CtxDep, EditorUser, UploadRateLimit, client_ip
from refserver.api.schemas import job_public
from refserver.auth.ratelimit import rate_limits
from refserver.ingest.intake import check_untrusted, safe_label, stage_stream, submit
from refserver.ingest.validate import PdfRejected
from refserver.jobs.store import PRIORITIES

router = APIRouter(tags=["upload"])


async def _accept(
    request: Request,
    ctx: Any,
    file: UploadFile,
    priority: str,
    username: str,
    *,
    enqueue: bool = True,
) -> Any:
    if priority not in PRIORITIES:
        raise HTTPException(400, f"priority must be one of: {', '.join(PRIORITIES)}")
    limits = rate_limits(request.app).config
    try:
        staged = await run_in_threadpool(stage_stream, ctx, file.file, file.filename)
        await run_in_threadpool(
            lambda: check_untrusted(
                ctx, staged, timeout=limits.sandbox_timeout, memory_mb=limits.sandbox_memory_mb
            )
        )
        return await run_in_threadpool(
            lambda: submit(ctx, staged, priority=priority, username=username, enqueue=enqueue)
        )
    except PdfRejected as exc:
        ctx.audit(
            "upload_rejected",
            username=username,
            client=client_ip(request),
            detail={"filename": safe_label(file.filename), "code": exc.code, "reason": exc.reason},
        )
        raise HTTPException(413 if exc.code == "too_large" else 400, exc.reason) from None


def _answer(sub: Any, filename: str | None) -> dict[str, Any]:
    return {
        "job_id": sub.job_id,
        "filename": filename or "",
        "status": sub.status,
        "message": sub.message,
        "paper_id": sub.paper_id,
    }


@router.post("/upload", dependencies=[UploadRateLimit])
async def upload(
    request: Request, ctx: CtxDep, user: EditorUser, file: UploadFile = File(...)
) -> dict[str, Any]:
    sub = await _accept(request, ctx, file, "normal", user.username)
    ctx.audit(
        "upload",
        username=user.username,
        target=sub.job_id,
        client=client_ip(request),
        detail={"filename": safe_label(file.filename), "paper_id": sub.paper_id},
    )
    return _answer(sub, file.filename)


@router.post("/upload-priority", dependencies=[UploadRateLimit])
async def upload_priority(
    request: Request,
    ctx: CtxDep,
    user: EditorUser,
    file: UploadFile = File(...),
    priority: str = Query("high"),
) -> dict[str, Any]:
    sub = await _accept(request, ctx, file, priority, user.username)
    ctx.audit(
        "upload",
        username=user.username,
        target=sub.job_id,
        client=client_ip(request),
        detail={"filename": safe_label(file.filename), "priority": priority},
    )
    return {**_answer(sub, file.filename), "priority": priority}


@router.post("/process", dependencies=[UploadRateLimit])
async def process(
    request: Request, ctx: CtxDep, user: EditorUser, file: UploadFile = File(...)
) -> dict[str, Any]:
    """Ingest now and answer when done (small files, scripts)."""
    t0 = time.monotonic()
    sub = await _accept(request, ctx, file, "urgent", user.username, enqueue=False)
    ctx.audit(
        "upload",
        username=user.username,
        target=sub.job_id,
        client=client_ip(request),
        detail={"filename": safe_label(file.filename), "sync": True},
    )
    if sub.status != "completed":
        await run_in_threadpool(ctx.pipeline.run_job, sub.job_id)
    job = ctx.jobs.get(sub.job_id)
    assert job is not None
    out = job_public(job)
    warnings: list[str] = []
    summary = out["result_summary"]
    if summary.get("duplicate_file"):
        warnings.append("identical file already stored; returning the existing paper")
    if summary.get("duplicate_of"):
        warnings.append(f"probable duplicate of {summary['duplicate_of']}")
    if summary.get("ocr_pages"):
        warnings.append(f"{summary['ocr_pages']} page(s) read by OCR")
    return {
        "doc_id": job.paper_id,
        "job_id": job.id,
        "success": job.status == "completed",
        "processing_time": round(time.monotonic() - t0, 3),
        "steps_completed": out["steps_completed"],
        "steps_failed": out["steps_failed"],
        "warnings": warnings,
        "error_message": job.error_message,
        "result_summary": summary,
    }
