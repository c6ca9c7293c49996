"""Search: keyword (FTS5/BM25), semantic (vectors), hybrid (RRF), similar papers, batches.

``SearchService`` is the one entry point the API and the CLI share; it owns the
generation-keyed query cache. Get the process-wide one with ``service(ctx)``.
"""

from __future__ import annotations

from typing import Any, Literal

from refserver.search.batch import BatchMode, batch_search
from refserver.search.cache import QueryCache
from refserver.search.common import Filters, SearchPage
from refserver.search.hybrid import hybrid_search
from refserver.search.keyword import fts_query, keyword_search
from refserver.search.semantic import IndexKind, semantic_search
from refserver.search.similar import similar_papers

Mode = Literal["keyword", "semantic", "hybrid"]
INDEX_KINDS = ("chroma", "int8", "float16")


class SearchService:
    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.cache = QueryCache(ctx.db)

    @property
    def default_index(self) -> IndexKind:
        """``REFSERVER_SEARCH_INDEX`` when the setting exists, else ChromaDB."""
        value = getattr(self.ctx.settings, "search_index", "chroma")
        return value if value in INDEX_KINDS else "chroma"  # type: ignore[return-value]

    def search(
        self,
        q: str | None,
        *,
        mode: Mode = "keyword",
        filters: Filters | None = None,
        limit: int = 20,
        offset: int = 0,
        snapshot: int | None = None,
        index: IndexKind | None = None,
    ) -> dict[str, Any]:
        """The public result page for one query (cached per library generation)."""
        filters = filters or Filters()
        index = index or self.default_index
        q = (q or "").strip() or None
        key = ("search", mode, q, filters.key(), limit, offset, snapshot, index)

        def compute(gen: int) -> dict[str, Any]:
            page = self._run(q, mode, filters, limit, offset, snapshot, index, gen)
            return page.public(q, limit, offset)

        return self.cache.get_or_compute(key, compute)

    def _run(
        self,
        q: str | None,
        mode: Mode,
        filters: Filters,
        limit: int,
        offset: int,
        snapshot: int | None,
        index: IndexKind,
        gen: int,
    ) -> SearchPage:
        if mode == "semantic" and q:
            return semantic_search(
                self.ctx, q, filters, limit, offset, snapshot=snapshot, generation=gen, index=index
            )
        if mode == "hybrid":
            return hybrid_search(
                self.ctx, q, filters, limit, offset, snapshot=snapshot, generation=gen, index=index
            )
        with self.ctx.db.read() as s:
            return keyword_search(s, q, filters, limit, offset, snapshot=snapshot, generation=gen)

    def similar(self, doc_id: str, limit: int = 10) -> dict[str, Any] | None:
        return self.cache.get_or_compute(
            ("similar", doc_id, limit), lambda _gen: similar_papers(self.ctx, doc_id, limit)
        )

    def batch(
        self,
        queries: list[str],
        *,
        mode: BatchMode = "semantic",
        filters: Filters | None = None,
        limit: int = 10,
        index: IndexKind | None = None,
    ) -> dict[str, Any]:
        gen = self.cache.generation()
        pages = batch_search(
            self.ctx,
            queries,
            mode=mode,
            filters=filters,
            limit=limit,
            generation=gen,
            index=index or self.default_index,
        )
        return {
            "mode": mode,
            "count": len(pages),
            "generation": gen,
            "results": [p.public(q, limit, 0) for q, p in zip(queries, pages, strict=True)],
        }


def service(ctx: Any) -> SearchService:
    """The process-wide SearchService on ``ctx`` (created on first use)."""
    svc = ctx.extras.get("search")
    if svc is None:
        svc = ctx.extras["search"] = SearchService(ctx)
    return svc


__all__ = [
    "Filters",
    "SearchService",
    "batch_search",
    "fts_query",
    "hybrid_search",
    "keyword_search",
    "semantic_search",
    "service",
    "similar_papers",
]
