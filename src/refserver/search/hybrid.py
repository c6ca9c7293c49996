"""Hybrid search: keyword and semantic rankings fused by reciprocal rank fusion.

RRF (Cormack et al., 2009) adds 1 / (k + rank) over the lists a paper appears
in, so it needs no score calibration between BM25 and cosine similarity and a
paper found by both ranks above one found by either alone.
"""

from __future__ import annotations

from typing import Any

from refserver.search.common import Filters, Result, SearchPage
from refserver.search.keyword import keyword_search
from refserver.search.semantic import IndexKind, semantic_search

RRF_K = 60
DEPTH = 50


def rrf(rankings: dict[str, list[str]], k: int = RRF_K) -> list[tuple[str, float]]:
    """Fused (doc_id, score) best first; ties broken by doc_id for stable paging."""
    scores: dict[str, float] = {}
    for ranking in rankings.values():
        for rank, doc_id in enumerate(ranking, start=1):
            scores[doc_id] = scores.get(doc_id, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda t: (-t[1], t[0]))


def hybrid_search(
    ctx: Any,
    q: str | None,
    filters: Filters,
    limit: int,
    offset: int,
    *,
    snapshot: int | None = None,
    generation: int = 0,
    index: IndexKind = "chroma",
) -> SearchPage:
    """Keyword + semantic, fused; without a query it lists papers like keyword search."""
    depth = max(DEPTH, 2 * (offset + limit))
    with ctx.db.read() as s:
        kw = keyword_search(s, q, filters, depth, 0, snapshot=snapshot, generation=generation)
    if not q or kw.mode == "list":
        return SearchPage(
            kw.total, kw.results[offset : offset + limit], "list", kw.snapshot, generation
        )
    sem = semantic_search(
        ctx,
        q,
        filters,
        depth,
        0,
        snapshot=kw.snapshot,
        generation=generation,
        index=index,
    )
    by_doc: dict[str, tuple[Result | None, Result | None]] = {}
    for r in kw.results:
        by_doc[r.doc_id] = (r, None)
    for r in sem.results:
        by_doc[r.doc_id] = (by_doc.get(r.doc_id, (None, None))[0], r)
    fused = rrf(
        {"keyword": [r.doc_id for r in kw.results], "semantic": [r.doc_id for r in sem.results]}
    )
    kw_rank = {r.doc_id: i for i, r in enumerate(kw.results, start=1)}
    sem_rank = {r.doc_id: i for i, r in enumerate(sem.results, start=1)}
    results: list[Result] = []
    for doc_id, score in fused[offset : offset + limit]:
        k_res, s_res = by_doc[doc_id]
        base = k_res or s_res
        assert base is not None
        extra: dict[str, Any] = {
            "keyword_rank": kw_rank.get(doc_id),
            "semantic_rank": sem_rank.get(doc_id),
        }
        if s_res is not None:
            extra.update(page=s_res.extra.get("page"), pages=s_res.extra.get("pages", []))
        snippet = k_res.snippet if k_res is not None and k_res.snippet else base.snippet
        if not snippet and s_res is not None:
            snippet = s_res.snippet
        results.append(
            Result(
                id=base.id,
                doc_id=doc_id,
                title=base.title,
                authors=base.authors,
                year=base.year,
                journal=base.journal,
                score=round(score, 6),
                snippet=snippet,
                extra=extra,
            )
        )
    total = max(len(fused), kw.total)
    return SearchPage(total, results, "hybrid", kw.snapshot, generation, {"index": index})
