"""Accepting a file: stage it safely, validate it, and create its ingest job.

The client's filename is only a label: the staged copy is named by a random id,
so a hostile name can never become a path.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from refserver.context import AppContext
from refserver.ingest.validate import PdfRejected, validate_pdf

CHUNK = 1 << 20


@dataclass
class Staged:
    path: Path
    sha256: str
    size: int
    filename: str


@dataclass
class Submitted:
    job_id: str
    status: str
    message: str
    paper_id: str | None = None


def safe_label(filename: str | None) -> str:
    name = os.path.basename((filename or "upload.pdf").replace("\\", "/"))
    name = "".join(c for c in name if c.isprintable())[:255]
    return name or "upload.pdf"


def stage_stream(ctx: AppContext, stream: BinaryIO, filename: str | None) -> Staged:
    """Copy an upload to the staging folder, hashing it and enforcing the size limit."""
    limit = ctx.settings.max_upload_mb * 1024 * 1024
    dest = ctx.settings.staging_dir / f"{uuid.uuid4().hex}.pdf"
    h = hashlib.sha256()
    size = 0
    try:
        with open(dest, "wb") as out:
            while block := stream.read(CHUNK):
                size += len(block)
                if size > limit:
                    raise PdfRejected(
                        f"file is larger than the {ctx.settings.max_upload_mb} MiB upload limit",
                        code="too_large",
                    )
                h.update(block)
                out.write(block)
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return Staged(dest, h.hexdigest(), size, safe_label(filename))


def stage_path(ctx: AppContext, src: Path) -> Staged:
    with open(src, "rb") as f:
        return stage_stream(ctx, f, src.name)


def check_untrusted(ctx: AppContext, staged: Staged, *, timeout: float, memory_mb: int) -> None:
    """Every intake check in the resource-capped sandbox, before any job exists."""
    from refserver.ingest.sandbox import validate_pdf_sandboxed

    try:
        validate_pdf_sandboxed(
            staged.path,
            ctx.settings.max_upload_mb * 1024 * 1024,
            ctx.settings.max_pages,
            timeout=timeout,
            memory_mb=memory_mb,
        )
    except PdfRejected:
        staged.path.unlink(missing_ok=True)
        raise


def submit(
    ctx: AppContext,
    staged: Staged,
    *,
    priority: str = "normal",
    username: str | None = None,
    batch_id: str | None = None,
    params: dict | None = None,
    enqueue: bool = True,
) -> Submitted:
    """Validate and queue; an identical file returns the existing paper at once."""
    try:
        validate_pdf(
            staged.path,
            max_bytes=ctx.settings.max_upload_mb * 1024 * 1024,
            max_pages=ctx.settings.max_pages,
        )
    except PdfRejected:
        staged.path.unlink(missing_ok=True)
        raise
    existing = ctx.library.find_by_sha(staged.sha256)
    if existing:
        staged.path.unlink(missing_ok=True)
        job_id = ctx.jobs.create(
            filename=staged.filename,
            priority=priority,
            file_sha256=staged.sha256,
            batch_id=batch_id,
            created_by=username,
            status="queued",
        )
        ctx.jobs.finish(
            job_id,
            "completed",
            summary={
                "doc_id": existing,
                "duplicate_file": True,
                "message": "identical file already stored",
            },
            paper_id=existing,
        )
        return Submitted(job_id, "completed", "identical file already stored", existing)
    job_id = ctx.jobs.create(
        filename=staged.filename,
        priority=priority,
        staged_path=str(staged.path),
        file_sha256=staged.sha256,
        batch_id=batch_id,
        created_by=username,
        params=params or {},
    )
    if enqueue:
        ctx.queue.enqueue(job_id, priority)
    return Submitted(job_id, "queued", "file accepted; processing started")


def sweep_staging(ctx: AppContext, *, min_age_seconds: float = 0.0) -> int:
    """Remove staged copies no job needs any more; returns how many.

    A crash between staging a file and finishing (or even creating) its job leaves
    its copy behind. Copies of queued, running or failed jobs stay (a retry may
    need them). Run it when no upload can be half-staged (at start), or with an age.
    """
    from sqlalchemy import select

    from refserver.storage.models import Job

    with ctx.db.read() as s:
        keep = set(
            s.execute(
                select(Job.staged_path).where(
                    Job.status.in_(("queued", "processing", "failed")), Job.staged_path.is_not(None)
                )
            ).scalars()
        )
    now = time.time()
    removed = 0
    for path in ctx.settings.staging_dir.glob("*.pdf"):
        if str(path) in keep:
            continue
        try:
            if min_age_seconds and now - path.stat().st_mtime < min_age_seconds:
                continue
            path.unlink()
            removed += 1
        except FileNotFoundError:
            continue
    return removed
