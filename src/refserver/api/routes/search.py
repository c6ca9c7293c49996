"""Search routes: keyword, semantic, hybrid, similar papers and batches (thin: see refserver.search)."""

from __future__ import annotations

import json
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field, ValidationError

from refserver.api.deps import CtxDep, ReaderDep
from refserver.search import Filters, service

router = APIRouter(tags=["search"])

ModeParam = Literal["keyword", "semantic", "hybrid"]
IndexParam = Literal["chroma", "int8", "float16"]


class FilterBody(BaseModel):
    title: str | None = None
    author: str | None = None
    year: int | None = None
    year_from: int | None = None
    year_to: int | None = None
    journal: str | None = None


class SearchBody(FilterBody):
    """A search request from a JSON body, query parameters, or both (body wins)."""

    query: str | None = None
    q: str | None = None
    limit: int = Field(10, ge=1, le=100)
    offset: int = Field(0, ge=0, le=10_000)
    filters: FilterBody | None = None
    snapshot: int | None = Field(None, ge=0)
    index: IndexParam | None = None

    def text(self) -> str | None:
        return self.query if self.query is not None else self.q

    def to_filters(self) -> Filters:
        merged = {k: v for k, v in self.filters.model_dump().items()} if self.filters else {}
        for key in FilterBody.model_fields:
            value = getattr(self, key)
            if value not in (None, ""):
                merged[key] = value
        return Filters(**{k: v for k, v in merged.items() if v not in (None, "")})


class BatchBody(BaseModel):
    queries: list[str] = Field(..., min_length=1, max_length=1000)
    mode: Literal["semantic", "keyword", "hybrid"] = "semantic"
    limit: int = Field(10, ge=1, le=100)
    filters: FilterBody | None = None
    index: IndexParam | None = None


async def _request_params(request: Request, model: type[BaseModel]) -> Any:
    """Query parameters overlaid with a JSON body, validated (422 with reasons)."""
    params: dict[str, Any] = dict(request.query_params)
    raw = await request.body()
    if raw.strip():
        try:
            body = json.loads(raw)
        except ValueError:
            raise HTTPException(400, "the body must be JSON") from None
        if not isinstance(body, dict):
            raise HTTPException(400, "the body must be a JSON object")
        params.update(body)
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        raise HTTPException(
            422, exc.errors(include_url=False, include_context=False, include_input=False)
        ) from None


def _filters(
    title: str | None,
    author: str | None,
    year: int | None,
    year_from: int | None,
    year_to: int | None,
    journal: str | None,
) -> Filters:
    return Filters(
        title=title or None,
        author=author or None,
        year=year,
        year_from=year_from,
        year_to=year_to,
        journal=journal or None,
    )


@router.get("/search")
async def search(
    ctx: CtxDep,
    _: ReaderDep,
    q: str | None = Query(None, max_length=1000),
    title: str | None = None,
    author: str | None = None,
    year: int | None = None,
    year_from: int | None = None,
    year_to: int | None = None,
    journal: str | None = None,
    mode: ModeParam = "keyword",
    limit: int = Query(20, ge=1, le=100),
    offset: int = Query(0, ge=0, le=10_000),
    snapshot: int | None = Query(None, ge=0),
    index: IndexParam | None = None,
) -> dict[str, Any]:
    """Keyword search (default), or ``mode=semantic|hybrid``; lists newest papers without q."""
    filters = _filters(title, author, year, year_from, year_to, journal)
    return await run_in_threadpool(
        service(ctx).search,
        q,
        mode=mode,
        filters=filters,
        limit=limit,
        offset=offset,
        snapshot=snapshot,
        index=index,
    )


@router.post("/search/vector")
async def vector_search(request: Request, ctx: CtxDep, _: ReaderDep) -> dict[str, Any]:
    """Semantic search: papers ranked by their best-matching pages."""
    body: SearchBody = await _request_params(request, SearchBody)
    if not (body.text() or "").strip():
        raise HTTPException(400, "query is required")
    return await run_in_threadpool(
        service(ctx).search,
        body.text(),
        mode="semantic",
        filters=body.to_filters(),
        limit=body.limit,
        offset=body.offset,
        snapshot=body.snapshot,
        index=body.index,
    )


async def _hybrid(request: Request, ctx: Any) -> dict[str, Any]:
    body: SearchBody = await _request_params(request, SearchBody)
    return await run_in_threadpool(
        service(ctx).search,
        body.text(),
        mode="hybrid",
        filters=body.to_filters(),
        limit=body.limit,
        offset=body.offset,
        snapshot=body.snapshot,
        index=body.index,
    )


@router.get("/search/hybrid")
async def hybrid_get(request: Request, ctx: CtxDep, _: ReaderDep) -> dict[str, Any]:
    """Keyword and semantic fused by reciprocal rank fusion."""
    return await _hybrid(request, ctx)


@router.post("/search/hybrid")
async def hybrid_post(request: Request, ctx: CtxDep, _: ReaderDep) -> dict[str, Any]:
    """Same as GET, with a JSON body."""
    return await _hybrid(request, ctx)


@router.post("/search/batch")
async def batch(request: Request, ctx: CtxDep, _: ReaderDep) -> dict[str, Any]:
    """Many queries answered in one pass (one embedding call, one vector query)."""
    body: BatchBody = await _request_params(request, BatchBody)
    filters = Filters(**body.filters.model_dump()) if body.filters else Filters()
    return await run_in_threadpool(
        service(ctx).batch,
        body.queries,
        mode=body.mode,
        filters=filters,
        limit=body.limit,
        index=body.index,
    )


@router.get("/similar/{doc_id}")
async def similar(
    doc_id: str, ctx: CtxDep, _: ReaderDep, limit: int = Query(10, ge=1, le=100)
) -> dict[str, Any]:
    """Papers closest to this one; the paper itself and its flagged duplicates excluded."""
    out = await run_in_threadpool(service(ctx).similar, doc_id, limit)
    if out is None:
        raise HTTPException(404, f"no paper {doc_id}")
    return out


def on_startup(ctx: Any) -> None:
    """Create the search service (and its cache listener) and apply tuned HNSW params."""
    from refserver.search.tune import apply_recorded_params

    service(ctx)
    apply_recorded_params(ctx)
