"""Health, status and library statistics."""

from __future__ import annotations

import shutil
import time
from typing import Any

from fastapi import APIRouter
from sqlalchemy import func, select

from refserver.api.deps import CtxDep, ReaderDep
from refserver.storage.models import Page, Paper, Vector
from refserver.storage.vectors import COLLECTIONS

router = APIRouter(tags=["system"])


@router.get("/health")
def health(ctx: CtxDep) -> dict[str, Any]:
    db_ok = True
    try:
        ctx.db.generation()
    except Exception:
        db_ok = False
    return {
        "status": "healthy" if db_ok else "unhealthy",
        "version": ctx.version,
        "database": db_ok,
        "workers_running": ctx.queue.running,
        "writes_paused": ctx.db.writes_paused,
        "timestamp": time.time(),
    }


@router.get("/status")
def status(ctx: CtxDep) -> dict[str, Any]:
    from refserver.ingest.ocr import tesseract_available

    db_ok = True
    try:
        ctx.db.generation()
    except Exception:
        db_ok = False
    return {
        "database": db_ok,
        "vector_index": ctx.vectors is not None,
        "metadata_extraction": True,
        "quality_assessment": True,
        "layout_analysis": True,
        "ocr": tesseract_available(),
        "llm_extraction": ctx.settings.llm_enabled,
        "backup_system": "backup" in ctx.extras,
        "consistency_check": "consistency" in ctx.extras,
        "scheduler_running": bool(ctx.scheduler and getattr(ctx.scheduler, "running", False)),
        "workers_running": ctx.queue.running,
        "version": ctx.version,
        "uptime": round(time.time() - ctx.started_at, 1),
        "deployment_mode": ctx.deployment_mode,
        "library_generation": ctx.db.generation(),
    }


def library_stats(ctx: Any) -> dict[str, Any]:
    with ctx.db.read() as s:
        total = s.execute(select(func.count()).select_from(Paper)).scalar_one()
        with_meta = s.execute(
            select(func.count()).select_from(Paper).where(Paper.title.is_not(None))
        ).scalar_one()
        with_emb = s.execute(
            select(func.count(func.distinct(Vector.paper_id))).where(Vector.kind == "paper")
        ).scalar_one()
        pages = s.execute(select(func.count()).select_from(Page)).scalar_one()
        ocr_pages = s.execute(
            select(func.count()).select_from(Page).where(Page.text_source == "ocr")
        ).scalar_one()
        vectors = s.execute(select(func.count()).select_from(Vector)).scalar_one()
        dups = s.execute(
            select(func.count()).select_from(Paper).where(Paper.duplicate_of.is_not(None))
        ).scalar_one()
        bytes_ = s.execute(select(func.coalesce(func.sum(Paper.file_size), 0))).scalar_one()
    disk = shutil.disk_usage(ctx.settings.data_dir)
    return {
        "total_papers": total,
        "papers_with_metadata": with_meta,
        "papers_with_embeddings": with_emb,
        "total_pages": pages,
        "ocr_pages": ocr_pages,
        "total_vectors": vectors,
        "probable_duplicates": dups,
        "pdf_bytes": int(bytes_),
        "jobs": ctx.jobs.counts(),
        "free_disk_bytes": disk.free,
        "library_generation": ctx.db.generation(),
    }


@router.get("/stats")
def stats(ctx: CtxDep, _: ReaderDep) -> dict[str, Any]:
    return library_stats(ctx)


@router.get("/vector/stats")
def vector_stats(ctx: CtxDep, _: ReaderDep) -> dict[str, Any]:
    collections: list[dict[str, Any]] = []
    total = 0
    if ctx.vectors is not None:
        for name in COLLECTIONS:
            n = ctx.vectors.count(name)
            total += n
            collections.append({"name": name, "count": n, "hnsw": ctx.vectors.configuration(name)})
    with ctx.db.read() as s:
        sqlite_vectors = s.execute(select(func.count()).select_from(Vector)).scalar_one()
        models = [
            {"model": m, "revision": r, "dimension": d, "count": c}
            for m, r, d, c in s.execute(
                select(
                    Vector.model, Vector.model_revision, Vector.dimension, func.count()
                ).group_by(Vector.model, Vector.model_revision, Vector.dimension)
            )
        ]
    return {
        "total_vectors": total,
        "sqlite_vectors": sqlite_vectors,
        "collections": collections,
        "models": models,
        "embedding_model": ctx.settings.embedding_model,
        "dimension": 384,
    }
