"""Semantic, hybrid, similar and batch search with real embeddings; the compact index."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from refserver.search import (
    Filters,
    batch_search,
    hybrid_search,
    semantic_search,
    service,
    similar_papers,
)
from refserver.search.quantized import QuantizedIndex
from refserver.search.tune import exact_topk
from refserver.storage.vectors import PAGES
from tests.search.conftest import TOPICS, add_paper, add_vector_paper, clustered

SRF = TOPICS[0]["title"]
FOSSIL = TOPICS[1]["title"]


def test_semantic_ranks_by_best_page_with_pages_and_snippet(lib) -> None:
    ctx, ids = lib
    page = semantic_search(ctx, "cold resonator made of niobium", Filters(), 3, 0)
    top = page.results[0]
    assert top.doc_id == ids[SRF]
    assert top.extra["page"] in (1, 2) and top.extra["pages"][0] == top.extra["page"]
    assert "niobium" in top.snippet.lower() and "<mark>" in top.snippet
    assert 0 < top.score <= 1 and page.results[0].score >= page.results[1].score
    # Paging over semantic results: disjoint pages.
    p2 = semantic_search(ctx, "cold resonator made of niobium", Filters(), 3, 3)
    assert not {r.doc_id for r in page.results} & {r.doc_id for r in p2.results}


def test_semantic_filters_and_deleted_papers(lib) -> None:
    ctx, ids = lib
    page = semantic_search(ctx, "cold resonator made of niobium", Filters(year_from=2019), 10, 0)
    assert ids[SRF] not in {r.doc_id for r in page.results}
    assert all(r.year >= 2019 for r in page.results)
    ctx.library.delete_paper(ids[FOSSIL])
    page = semantic_search(ctx, "ammonite shells in marine shale", Filters(), 10, 0)
    assert ids[FOSSIL] not in {r.doc_id for r in page.results}


def test_hybrid_fuses_both_lists(lib) -> None:
    ctx, ids = lib
    page = hybrid_search(ctx, "higgs diphoton resonance", Filters(), 5, 0)
    top = page.results[0]
    assert top.doc_id == ids["Higgs boson decays to two photons at the LHC"]
    assert top.extra["keyword_rank"] == 1 and top.extra["semantic_rank"] == 1
    # Found only by meaning (no shared word) still appears.
    page = hybrid_search(ctx, "battery drain smartphones", Filters(), 5, 0)
    assert page.results[0].doc_id == ids["Energy efficiency of green software engineering"]
    assert page.results[0].extra["keyword_rank"] is None


def test_similar_excludes_itself_and_flagged_duplicates(lib) -> None:
    ctx, ids = lib
    orig = add_paper(
        ctx, "Widget theory of everything", ["Widgets explain everything. " * 10], doi="10.1/widget"
    )
    dup = add_paper(
        ctx,
        "Widget theory of everything (preprint)",
        ["Widgets explain everything. " * 9],
        doi="10.1/widget",
    )
    with ctx.db.read() as s:
        assert ctx.library.get(s, dup).duplicate_of == orig
    out = similar_papers(ctx, orig, 10)
    found = [p["doc_id"] for p in out["similar_papers"]]
    assert orig not in found and dup not in found
    assert out["total_found"] == len(found) == 6
    assert all(set(p["metadata"]) >= {"title", "authors", "year"} for p in out["similar_papers"])
    sims = [p["similarity"] for p in out["similar_papers"]]
    assert sims == sorted(sims, reverse=True)
    back = [p["doc_id"] for p in similar_papers(ctx, dup, 10)["similar_papers"]]
    assert orig not in back and dup not in back
    assert similar_papers(ctx, "no-such-paper", 5) is None
    assert len(similar_papers(ctx, ids[SRF], 2)["similar_papers"]) == 2


class Spy:
    """Counts calls to a real method (the store still does the work)."""

    def __init__(self, fn: Any) -> None:
        self.fn, self.calls = fn, 0

    def __call__(self, *a: Any, **kw: Any) -> Any:
        self.calls += 1
        return self.fn(*a, **kw)


def test_batch_is_batched_embedding_and_one_index_call(lib, monkeypatch) -> None:
    ctx, ids = lib
    queries = [t["pages"][0] for t in TOPICS] * 5
    singles = [semantic_search(ctx, q, Filters(), 3, 0).results[0].doc_id for q in queries[:6]]
    emb = ctx.embedder()
    col = ctx.vectors.collection(PAGES)
    embed_spy, query_spy = Spy(emb._embed_batch), Spy(col.query)
    monkeypatch.setattr(emb, "_embed_batch", embed_spy)
    monkeypatch.setattr(col, "query", query_spy)
    pages = batch_search(ctx, queries, limit=3)
    # 30 queries: two model calls (16 per call, sorted by tokens), one index call.
    assert embed_spy.calls == 2 and query_spy.calls == 1
    assert len(pages) == 30
    assert [p.results[0].doc_id for p in pages[:6]] == singles == [ids[t["title"]] for t in TOPICS]
    assert all(p.results[0].snippet for p in pages)
    kw = batch_search(ctx, ["niobium", "ammonites"], mode="keyword", limit=2)
    assert [p.results[0].doc_id for p in kw] == [ids[SRF], ids[FOSSIL]]
    hy = batch_search(ctx, ["niobium cavity", "ammonite shells"], mode="hybrid", limit=2)
    assert [p.results[0].doc_id for p in hy] == [ids[SRF], ids[FOSSIL]]
    with pytest.raises(ValueError):
        batch_search(ctx, ["x"] * 1001)


def test_cache_is_invalidated_by_a_library_change(lib) -> None:
    ctx, _ = lib
    svc = service(ctx)
    assert svc.search("gizmotron")["total"] == 0
    hits = svc.cache.hits
    assert svc.search("gizmotron")["total"] == 0
    assert svc.cache.hits == hits + 1  # served from the cache
    add_paper(ctx, "The gizmotron", ["gizmotron physics"])
    assert svc.search("gizmotron")["total"] == 1
    doc = svc.search("gizmotron")["results"][0]["doc_id"]
    ctx.library.update_metadata(doc, {"title": "Renamed entirely"})
    assert svc.search("gizmotron", mode="hybrid")["results"][0]["title"] == "Renamed entirely"
    # A change committed through another connection (as another process would:
    # no listener fires here) is caught by the generation check on lookup.
    from sqlalchemy import text

    from refserver.storage.db import Database

    other = Database(str(ctx.settings.database_url))
    try:
        with other.write() as s:
            s.execute(
                text("UPDATE papers SET title = 'Changed elsewhere' WHERE doc_id = :d"), {"d": doc}
            )
    finally:
        other.dispose()
    assert svc.search("gizmotron", mode="hybrid")["results"][0]["title"] == "Changed elsewhere"


@pytest.mark.parametrize("dtype,code_bytes", [("int8", 384), ("float16", 768)])
def test_quantized_index_recall_memory_and_sync(ctx, dtype: str, code_bytes: int) -> None:
    rng = np.random.default_rng(1)
    centers = rng.normal(size=(40, 384))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    doc_ids = []
    for i in range(30):
        vecs = clustered(rng, 40, centers, 0.06)
        doc_ids.append(add_vector_paper(ctx, f"{i:064x}", i, vecs, title=f"synthetic {i}"))
    q_index = QuantizedIndex(ctx.db, dtype=dtype)  # type: ignore[arg-type]
    assert q_index.sync() == 1200
    assert q_index.bytes_per_vector() == code_bytes + 8 + 4  # code, id, error norm
    assert 1536 / code_bytes >= (4 if dtype == "int8" else 2)
    from refserver.search.tune import load_vectors

    chroma_ids, mat = load_vectors(ctx)
    queries = clustered(rng, 100, centers, 0.08)
    exact = exact_topk(mat, queries, 10)
    got = q_index.search(queries, 10)
    exact_keys = [{chroma_ids[j] for j in row} for row in exact]
    found_keys = [{f"{d}:{p}" for d, p, _ in row} for row in got]
    rec = np.mean([len(a & b) / 10 for a, b in zip(exact_keys, found_keys, strict=True)])
    assert rec >= 0.95
    # Scores are exact cosines (re-ranked from float32 in SQLite).
    d, p, sim = got[0][0]
    row = chroma_ids.index(f"{d}:{p}")
    assert abs(float(mat[row] @ queries[0]) - sim) < 1e-5
    # Follows the library: a deleted paper disappears, a new one appears.
    ctx.library.delete_paper(doc_ids[0])
    assert q_index.sync() == 1160
    assert all(d != doc_ids[0] for row in q_index.search(queries[:20], 10) for d, _, _ in row)
    # Same answers through the semantic search path as through ChromaDB.
    ctx.extras[f"search.quantized.{dtype}"] = q_index
    a = semantic_search(ctx, "", Filters(), 5, 0, vector=queries[1], index=dtype)  # type: ignore[arg-type]
    b = semantic_search(ctx, "", Filters(), 5, 0, vector=queries[1], index="chroma")
    assert [r.doc_id for r in a.results] == [r.doc_id for r in b.results]
    assert ctx.vectors.count(PAGES) == 1160
