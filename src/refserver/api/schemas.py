"""Public response shapes (separate from the ORM models)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from refserver.storage.models import Job, Paper


def iso(dt: datetime | None) -> str | None:
    return dt.isoformat() if dt else None


def job_public(job: Job) -> dict[str, Any]:
    return {
        "job_id": job.id,
        "kind": job.kind,
        "filename": job.filename,
        "status": job.status,
        "priority": job.priority,
        "current_step": job.current_step,
        "progress_percentage": float(job.progress or 0.0),
        "steps_completed": list(job.steps_completed or []),
        "steps_failed": [
            f["step"] if isinstance(f, dict) else str(f) for f in (job.steps_failed or [])
        ],
        "step_errors": [f for f in (job.steps_failed or []) if isinstance(f, dict)],
        "step_results": dict(job.step_results or {}),
        "result_summary": dict(job.result_summary or {}),
        "error_message": job.error_message,
        "paper_id": job.paper_id,
        "batch_id": job.batch_id,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
    }


def metadata_public(p: Paper) -> dict[str, Any]:
    return {
        "doc_id": p.doc_id,
        "title": p.title,
        "authors": list(p.authors or []),
        "year": p.year,
        "journal": p.journal,
        "doi": p.doi,
        "arxiv_id": p.arxiv_id,
        "abstract": p.abstract,
        "keywords": list(p.keywords or []),
        "tags": list(p.tags or []),
        "field_sources": dict(p.field_sources or {}),
        "duplicate_of": p.duplicate_of,
        "duplicate_reason": p.duplicate_reason,
    }


def paper_public(p: Paper, text: str | None = None) -> dict[str, Any]:
    return {
        "id": p.id,
        "doc_id": p.doc_id,
        "filename": p.filename,
        "title": p.title,
        "authors": list(p.authors or []),
        "year": p.year,
        "journal": p.journal,
        "doi": p.doi,
        "page_count": p.page_count,
        "file_sha256": p.file_sha256,
        "file_size": p.file_size,
        "ocr_text": text if text is not None else "",
        "ocr_quality": float(p.ocr_quality or 0.0),
        "ocr_pages": p.ocr_pages,
        "processing_time": float(p.processing_time or 0.0),
        "duplicate_of": p.duplicate_of,
        "created_at": iso(p.created_at),
        "updated_at": iso(p.updated_at),
    }
