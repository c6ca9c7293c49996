"""Citation export: ``GET /export?format=bibtex|ris|csljson&q=&doc_id=``."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from refserver.api.deps import CtxDep, ReaderDep
from refserver.interop.common import FORMATS
from refserver.interop.export import content_type, export_library, filename_for

router = APIRouter(tags=["export"])


@router.get("/export")
async def export(
    ctx: CtxDep,
    _: ReaderDep,
    format: str = Query("bibtex", description="bibtex, ris or csljson"),
    q: str | None = Query(None, description="keyword query (FTS5) selecting papers"),
    doc_id: list[str] | None = Query(None, description="one or more papers by doc_id"),
) -> Response:
    fmt = format.lower().replace("-", "").replace("_", "")
    if fmt == "csl":
        fmt = "csljson"
    if fmt not in FORMATS:
        raise HTTPException(400, f"format must be one of: {', '.join(FORMATS)}")
    body, count = await run_in_threadpool(
        lambda: export_library(ctx, fmt, q=q, doc_ids=list(doc_id) if doc_id else None)
    )
    if doc_id and count == 0:
        raise HTTPException(404, "no such paper")
    return Response(
        content=body,
        media_type=content_type(fmt),
        headers={
            "Content-Disposition": f'attachment; filename="{filename_for(fmt)}"',
            "X-Record-Count": str(count),
        },
    )
