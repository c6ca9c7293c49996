"""Reading papers: record, metadata, text, vectors, layout, preview, file; edits and delete."""

from __future__ import annotations

from typing import Any

import pymupdf
from fastapi import APIRouter, Body, HTTPException, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from sqlalchemy import func, select

from refserver.api.deps import CtxDep, EditorUser, ReaderDep, SuperUser
from refserver.api.schemas import metadata_public, paper_public
from refserver.embedding.model import decode_vector
from refserver.ingest.layout import page_layout
from refserver.storage.library import EDITABLE_FIELDS
from refserver.storage.models import FieldEdit, Page, Paper, Vector

router = APIRouter(tags=["papers"])


def _paper(ctx: Any, s: Any, doc_id: str, with_pages: bool = False) -> Paper:
    paper = ctx.library.get(s, doc_id, with_pages=with_pages)
    if paper is None:
        raise HTTPException(404, f"no paper {doc_id}")
    return paper


@router.get("/papers")
def list_papers(
    ctx: CtxDep,
    _: ReaderDep,
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0),
) -> dict[str, Any]:
    with ctx.db.read() as s:
        total = s.execute(select(func.count()).select_from(Paper)).scalar_one()
        rows = s.execute(
            select(Paper)
            .order_by(Paper.created_at.desc(), Paper.id.desc())
            .limit(limit)
            .offset(offset)
        ).scalars()
        return {
            "papers": [paper_public(p, "") for p in rows],
            "total": total,
            "limit": limit,
            "offset": offset,
        }


@router.get("/paper/{doc_id}")
def get_paper(doc_id: str, ctx: CtxDep, _: ReaderDep) -> dict[str, Any]:
    with ctx.db.read() as s:
        p = _paper(ctx, s, doc_id, with_pages=True)
        return {
            **paper_public(p, "\n\n".join(pg.text for pg in p.pages)),
            **{"metadata": metadata_public(p)},
        }


@router.get("/metadata/{doc_id}")
def get_metadata(doc_id: str, ctx: CtxDep, _: ReaderDep) -> dict[str, Any]:
    with ctx.db.read() as s:
        p = _paper(ctx, s, doc_id)
        edits = s.execute(
            select(FieldEdit).where(FieldEdit.paper_id == p.id).order_by(FieldEdit.id.desc())
        ).scalars()
        out = metadata_public(p)
        out["edits"] = [
            {
                "id": e.id,
                "field": e.field,
                "old_value": e.old_value,
                "new_value": e.new_value,
                "username": e.username,
                "created_at": e.created_at.isoformat(),
            }
            for e in edits
        ]
        return out


@router.patch("/metadata/{doc_id}")
def edit_metadata(
    doc_id: str, ctx: CtxDep, user: EditorUser, changes: dict[str, Any] = Body(...)
) -> dict[str, Any]:
    bad = set(changes) - set(EDITABLE_FIELDS)
    if bad:
        raise HTTPException(400, f"fields not editable: {', '.join(sorted(bad))}")
    for key in ("authors", "keywords", "tags"):
        if key in changes and not (
            isinstance(changes[key], list) and all(isinstance(x, str) for x in changes[key])
        ):
            raise HTTPException(400, f"{key} must be a list of strings")
    if "year" in changes and changes["year"] is not None and not isinstance(changes["year"], int):
        raise HTTPException(400, "year must be an integer")
    paper = ctx.library.update_metadata(doc_id, changes, username=user.username)
    if paper is None:
        raise HTTPException(404, f"no paper {doc_id}")
    ctx.audit(
        "edit_metadata", username=user.username, target=doc_id, detail={"fields": sorted(changes)}
    )
    return metadata_public(paper)


@router.post("/metadata/{doc_id}/undo/{edit_id}")
def undo_edit(doc_id: str, edit_id: int, ctx: CtxDep, user: EditorUser) -> dict[str, Any]:
    with ctx.db.read() as s:
        p = _paper(ctx, s, doc_id)
        edit = s.get(FieldEdit, edit_id)
        if edit is None or edit.paper_id != p.id:
            raise HTTPException(404, f"no edit {edit_id} on paper {doc_id}")
    paper = ctx.library.undo_edit(edit_id, username=user.username)
    assert paper is not None
    return metadata_public(paper)


@router.get("/text/{doc_id}")
def get_text(doc_id: str, ctx: CtxDep, _: ReaderDep) -> dict[str, Any]:
    with ctx.db.read() as s:
        p = _paper(ctx, s, doc_id, with_pages=True)
        text = "\n\n".join(pg.text for pg in p.pages)
        return {
            "doc_id": doc_id,
            "text": text,
            "text_length": len(text),
            "ocr_quality": float(p.ocr_quality or 0.0),
            "pages": [
                {
                    "page": pg.page_number,
                    "text": pg.text,
                    "source": pg.text_source,
                    "quality": pg.quality,
                }
                for pg in p.pages
            ],
        }


def _vector_public(v: Vector) -> dict[str, Any]:
    vec = decode_vector(v.vector, v.dtype, v.dimension)
    return {
        "page_number": v.page_number,
        "kind": v.kind,
        "dimension": v.dimension,
        "dtype": v.dtype,  # how SQLite stores it; `vector` is always the decoded float32
        "model": v.model,
        "model_revision": v.model_revision,
        "checksum": v.checksum,
        "vector": [float(x) for x in vec],
    }


@router.get("/embedding/{doc_id}")
def get_embedding(doc_id: str, ctx: CtxDep, _: ReaderDep) -> dict[str, Any]:
    with ctx.db.read() as s:
        p = _paper(ctx, s, doc_id)
        v = s.execute(
            select(Vector).where(Vector.paper_id == p.id, Vector.kind == "paper")
        ).scalar_one_or_none()
        if v is None:
            raise HTTPException(404, f"paper {doc_id} has no embedding")
        return {"doc_id": doc_id, **_vector_public(v)}


@router.get("/embedding/{doc_id}/pages")
def get_page_embeddings(doc_id: str, ctx: CtxDep, _: ReaderDep) -> dict[str, Any]:
    with ctx.db.read() as s:
        p = _paper(ctx, s, doc_id)
        rows = s.execute(
            select(Vector)
            .where(Vector.paper_id == p.id, Vector.kind == "page")
            .order_by(Vector.page_number)
        ).scalars()
        pages = [_vector_public(v) for v in rows]
        return {
            "doc_id": doc_id,
            "total_pages": len(pages),
            "dimension": pages[0]["dimension"] if pages else 0,
            "pages": pages,
        }


@router.get("/embedding/{doc_id}/page/{n}")
def get_page_embedding(doc_id: str, n: int, ctx: CtxDep, _: ReaderDep) -> dict[str, Any]:
    with ctx.db.read() as s:
        p = _paper(ctx, s, doc_id)
        v = s.execute(
            select(Vector).where(
                Vector.paper_id == p.id, Vector.kind == "page", Vector.page_number == n
            )
        ).scalar_one_or_none()
        if v is None:
            raise HTTPException(404, f"paper {doc_id} has no vector for page {n}")
        return {"doc_id": doc_id, **_vector_public(v)}


@router.get("/layout/{doc_id}")
async def get_layout(
    doc_id: str, ctx: CtxDep, _: ReaderDep, page: int | None = Query(None, ge=1)
) -> dict[str, Any]:
    with ctx.db.read() as s:
        p = _paper(ctx, s, doc_id)
        path, count = ctx.files.path_for(p.file_sha256), p.page_count
    if page is not None and page > count:
        raise HTTPException(404, f"paper {doc_id} has {count} pages")

    def work() -> list[dict[str, Any]]:
        with pymupdf.open(path) as doc:
            numbers = [page - 1] if page else range(min(len(doc), 50))
            return [page_layout(doc[i]) for i in numbers]

    pages = await run_in_threadpool(work)
    return {"doc_id": doc_id, "total_pages": count, "pages": pages}


@router.get("/preview/{doc_id}")
async def get_preview(doc_id: str, ctx: CtxDep, _: ReaderDep) -> FileResponse:
    with ctx.db.read() as s:
        p = _paper(ctx, s, doc_id)
        path = ctx.files.path_for(p.file_sha256)
    out = ctx.settings.previews_dir / f"{doc_id}.png"
    if not out.exists():

        def render() -> None:
            with pymupdf.open(path) as doc:
                ctx.pipeline.render_preview(doc, doc_id)

        await run_in_threadpool(render)
    return FileResponse(out, media_type="image/png")


@router.get("/page-image/{doc_id}/{n}")
async def get_page_image(
    doc_id: str, n: int, ctx: CtxDep, _: ReaderDep, width: int = Query(900, ge=100, le=2400)
) -> Any:
    from fastapi.responses import Response

    with ctx.db.read() as s:
        p = _paper(ctx, s, doc_id)
        path, count = ctx.files.path_for(p.file_sha256), p.page_count
    if not 1 <= n <= count:
        raise HTTPException(404, f"paper {doc_id} has {count} pages")

    def render() -> bytes:
        with pymupdf.open(path) as doc:
            page = doc[n - 1]
            zoom = width / max(page.rect.width, 1)
            return page.get_pixmap(matrix=pymupdf.Matrix(zoom, zoom)).tobytes("png")

    return Response(await run_in_threadpool(render), media_type="image/png")


@router.get("/download/{doc_id}")
def download(doc_id: str, ctx: CtxDep, _: ReaderDep) -> FileResponse:
    with ctx.db.read() as s:
        p = _paper(ctx, s, doc_id)
        path, name = ctx.files.path_for(p.file_sha256), p.filename or f"{doc_id}.pdf"
    if not path.exists():
        raise HTTPException(410, "the PDF file is missing; run the consistency check")
    return FileResponse(path, media_type="application/pdf", filename=name)


@router.delete("/paper/{doc_id}")
def delete_paper(doc_id: str, ctx: CtxDep, user: SuperUser) -> dict[str, Any]:
    if not ctx.library.delete_paper(doc_id, username=user.username):
        raise HTTPException(404, f"no paper {doc_id}")
    (ctx.settings.previews_dir / f"{doc_id}.png").unlink(missing_ok=True)
    ctx.audit("delete_paper", username=user.username, target=doc_id)
    return {"doc_id": doc_id, "deleted": True}


@router.get("/paper/{doc_id}/pages")
def get_pages(doc_id: str, ctx: CtxDep, _: ReaderDep) -> dict[str, Any]:
    with ctx.db.read() as s:
        p = _paper(ctx, s, doc_id)
        rows = s.execute(
            select(Page).where(Page.paper_id == p.id).order_by(Page.page_number)
        ).scalars()
        pages = [
            {
                "page": pg.page_number,
                "source": pg.text_source,
                "quality": pg.quality,
                "chars": len(pg.text),
            }
            for pg in rows
        ]
    return {"doc_id": doc_id, "pages": pages, "total": len(pages)}
