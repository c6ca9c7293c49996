"""Uploads: queued (``/upload``) and synchronous (``/process``)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, File, HTTPException, Query, UploadFile
from fastapi.concurrency import run_in_threadpool

from refserver.api.deps import CtxDep, EditorUser
from refserver.api.schemas import job_public
from refserver.ingest.intake import stage_stream, submit
from refserver.ingest.validate import PdfRejected
from refserver.jobs.store import PRIORITIES

router = APIRouter(tags=["upload"])


async def _accept(
    ctx: Any, file: UploadFile, priority: str, username: str, *, enqueue: bool = True
) -> Any:
    if priority not in PRIORITIES:
        raise HTTPException(400, f"priority must be one of: {', '.join(PRIORITIES)}")
    try:
        staged = await run_in_threadpool(stage_stream, ctx, file.file, file.filename)
        return await run_in_threadpool(
            lambda: submit(ctx, staged, priority=priority, username=username, enqueue=enqueue)
        )
    except PdfRejected as exc:
        raise HTTPException(413 if exc.code == "too_large" else 400, exc.reason) from None


def _answer(sub: Any, filename: str | None) -> dict[str, Any]:
    return {
        "job_id": sub.job_id,
        "filename": filename or "",
        "status": sub.status,
        "message": sub.message,
        "paper_id": sub.paper_id,
    }


@router.post("/upload")
async def upload(ctx: CtxDep, user: EditorUser, file: UploadFile = File(...)) -> dict[str, Any]:
    sub = await _accept(ctx, file, "normal", user.username)
    ctx.audit(
        "upload", username=user.username, target=sub.job_id, detail={"filename": file.filename}
    )
    return _answer(sub, file.filename)


@router.post("/upload-priority")
async def upload_priority(
    ctx: CtxDep, user: EditorUser, file: UploadFile = File(...), priority: str = Query("high")
) -> dict[str, Any]:
    sub = await _accept(ctx, file, priority, user.username)
    ctx.audit(
        "upload",
        username=user.username,
        target=sub.job_id,
        detail={"filename": file.filename, "priority": priority},
    )
    return {**_answer(sub, file.filename), "priority": priority}


@router.post("/process")
async def process(ctx: CtxDep, user: EditorUser, file: UploadFile = File(...)) -> dict[str, Any]:
    """Ingest now and answer when done (small files, scripts)."""
    t0 = time.monotonic()
    sub = await _accept(ctx, file, "urgent", user.username, enqueue=False)
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
