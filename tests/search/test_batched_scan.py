"""The compact index's batched scan: same answers as one query at a time, codes read once."""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np
import pytest

from refserver.search import Filters, batch_search, scan, semantic_search
from refserver.search import quantized as quantized_mod
from refserver.search.quantized import QuantizedIndex
from tests.search.conftest import TOPICS, add_vector_paper, clustered

DTYPES = ["int8", "float16"]


def test_scan_graphs_compute_exact_products() -> None:
    """The hand-written ONNX graphs: exact int32 products (no int16 saturation), float GEMM."""
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 256, (300, 384), dtype=np.uint8)
    codes[:5] = 255  # worst case for pairwise int16 sums on non-VNNI kernels
    w = rng.integers(-scan.WEIGHT_MAX, scan.WEIGHT_MAX + 1, (384, 7)).astype(np.int8)
    w[:, 0] = scan.WEIGHT_MAX
    w[:, 1] = -scan.WEIGHT_MAX
    got = scan.session("int8", 384).run(None, {"codes": codes, "weights": w})[0]
    assert got.shape == (7, 300)
    assert np.array_equal(got, (codes.astype(np.int64) @ w.astype(np.int64)).T.astype(np.float32))
    half = rng.normal(size=(300, 384)).astype(np.float16)
    q = rng.normal(size=(7, 384)).astype(np.float32)
    got = scan.session("float16", 384).run(None, {"codes": half, "weights": q})[0]
    assert np.allclose(got, q @ half.astype(np.float32).T, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("qtype", [faiss.ScalarQuantizer.QT_8bit, faiss.ScalarQuantizer.QT_fp16])
def test_scan_matches_faiss_on_its_own_codes(qtype: int, monkeypatch) -> None:
    """Reading faiss's codes and ranges directly decodes exactly as faiss does."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(3000, 384)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    sq = faiss.IndexScalarQuantizer(384, qtype, faiss.METRIC_INNER_PRODUCT)
    sq.train(x)
    sq.add(x)
    codes = scan.codes_view(sq)
    assert codes.shape == (3000, sq.code_size)
    if qtype == faiss.ScalarQuantizer.QT_8bit:
        vmin, vdiff = scan.int8_ranges(sq)
        mine = vmin + (codes[:50].astype(np.float32) + 0.5) / 255 * vdiff
        assert np.allclose(mine, sq.sa_decode(codes[:50]), atol=1e-6)
    monkeypatch.setattr(scan, "BLOCK_ROWS", 512)  # several blocks, the last one short
    q = rng.normal(size=(20, 384)).astype(np.float32)
    _, single = sq.search(q, 30)
    batched = scan.scan_topk(sq, q, 30)
    assert [set(r) for r in batched] == [set(r) for r in single]
    # More candidates than codes: padded with -1, like faiss.
    small = scan.scan_topk(sq, q[:3], 5000)
    assert small.shape == (3, 5000) and (small[:, 3000:] == -1).all()
    assert all(set(r[:3000]) == set(range(3000)) for r in small)


@pytest.fixture
def synthetic(ctx: Any) -> tuple[Any, list[str], np.ndarray]:
    """A library of 40 papers × 40 pages (real SQLite and ChromaDB), and 60 queries."""
    rng = np.random.default_rng(7)
    centers = rng.normal(size=(30, 384))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    doc_ids = []
    for i in range(40):
        vecs = clustered(rng, 40, centers, 0.07)
        doc_ids.append(
            add_vector_paper(
                ctx, f"{i + 1000:064x}", i, vecs, title=f"synthetic {i}", year=2000 + i % 10
            )
        )
    return ctx, doc_ids, clustered(rng, 60, centers, 0.09)


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_equals_one_by_one(synthetic, dtype: str, monkeypatch) -> None:
    ctx, doc_ids, queries = synthetic
    monkeypatch.setattr(scan, "BLOCK_ROWS", 300)  # 1,600 codes in 6 blocks
    index = QuantizedIndex(ctx.db, dtype=dtype)  # type: ignore[arg-type]
    assert index.sync() == 1600
    calls = []
    real_scan = quantized_mod.scan_topk_scores
    monkeypatch.setattr(
        quantized_mod, "scan_topk_scores", lambda *a, **kw: calls.append(1) or real_scan(*a, **kw)
    )
    # Candidates before re-ranking: the batch reads the codes once, one scan call.
    batch_cand = index.candidates(queries, 40)
    assert len(calls) == 1
    single_cand = np.vstack([index.candidates(q, 40) for q in queries])
    assert len(calls) == 1  # single queries go through faiss's own scan
    assert [set(r) for r in batch_cand] == [set(r) for r in single_cand]
    # Re-ranked answers: identical content and order, per query in the order given.
    batch = index.search(queries, 10)
    single = [index.search(q, 10)[0] for q in queries]
    assert batch == single
    assert index.search(queries[::-1], 10) == single[::-1]
    assert all(len(r) == 10 for r in batch)
    # Just below and at the batch threshold: the same answers either way.
    n = scan.MIN_BATCH
    assert index.search(queries[: n - 1], 10) == single[: n - 1]
    assert index.search(queries[:n], 10) == single[:n]
    # A deleted paper leaves the codes and the id map together.
    gone = {d for row in batch[:5] for d, _, _ in row[:1]}
    for d in gone:
        ctx.library.delete_paper(d)
    after = index.search(queries, 10)
    assert not {d for row in after for d, _, _ in row} & gone
    assert after == [index.search(q, 10)[0] for q in queries]


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_search_uses_the_batched_scan(lib, dtype: str, monkeypatch) -> None:
    """batch_search with the compact index: one scan for all queries, filters still applied."""
    ctx, ids = lib
    queries = [t["pages"][1] for t in TOPICS] + ["cold resonator made of niobium"] * 3
    singles = [
        semantic_search(ctx, q, Filters(), 3, 0, index=dtype)  # type: ignore[arg-type]
        for q in queries
    ]
    calls = []
    real_scan = quantized_mod.scan_topk_scores
    monkeypatch.setattr(
        quantized_mod, "scan_topk_scores", lambda *a, **kw: calls.append(1) or real_scan(*a, **kw)
    )
    pages = batch_search(ctx, queries, limit=3, index=dtype)  # type: ignore[arg-type]
    assert len(calls) == 1
    assert [[r.doc_id for r in p.results] for p in pages] == [
        [r.doc_id for r in p.results] for p in singles
    ]
    assert [p.results[0].score for p in pages] == [p.results[0].score for p in singles]
    assert [p.results[0].doc_id for p in pages[:6]] == [ids[t["title"]] for t in TOPICS]
    # Filters are applied to the batched candidates as to single ones.
    recent = Filters(year_from=2019)
    pages = batch_search(ctx, queries, filters=recent, limit=10, index=dtype)  # type: ignore[arg-type]
    assert len(calls) == 2
    assert all(r.year >= 2019 for p in pages for r in p.results)
    assert ids[TOPICS[0]["title"]] not in {r.doc_id for p in pages for r in p.results}
    one = semantic_search(ctx, queries[-1], recent, 10, 0, index=dtype)  # type: ignore[arg-type]
    assert [r.doc_id for r in pages[-1].results] == [r.doc_id for r in one.results]


def test_embed_queries_keeps_the_order_and_the_vectors(ctx) -> None:
    """Sorted by token count for the model, answered in the order given, same vectors."""
    from refserver.search.batch import QUERY_BATCH, embed_queries

    emb = ctx.embedder()
    texts = [t["title"] for t in TOPICS] + [p for t in TOPICS for p in t["pages"]] + ["x"]
    assert len(texts) > QUERY_BATCH
    counts = emb.token_counts(texts)
    assert counts[-1] == 3  # [CLS] x [SEP], not padded to the longest text
    assert emb.token_counts(["one two three four"]) == [6]
    assert counts[len(TOPICS)] > counts[0] > 3  # a first page has more tokens than its title
    got = embed_queries(emb, texts)
    one = np.vstack([emb.embed([t]) for t in texts])
    assert got.shape == one.shape and np.abs(got - one).max() < 1e-5


@pytest.mark.parametrize("dtype", DTYPES)
def test_search_reads_only_candidates_that_can_rank(synthetic, dtype: str, monkeypatch) -> None:
    """The error-norm bound skips SQLite reads without changing any answer."""
    ctx, _, queries = synthetic
    index = QuantizedIndex(ctx.db, dtype=dtype)  # type: ignore[arg-type]
    index.sync()
    cand = index.candidates(queries, 40)
    every = np.unique(cand[cand >= 0])
    found, mat, where = index._read_vectors(every)
    expected = []  # every candidate re-ranked exactly, ties in candidate order
    for qi, row in enumerate(cand):
        r = np.searchsorted(found, row[row >= 0])
        scores = np.einsum("ij,j->i", mat[r], queries[qi])  # row-set independent rounding
        order = np.argsort(-scores, kind="stable")[:10]
        expected.append([(*where[r[j]], float(scores[j])) for j in order])
    reads: list[int] = []
    real = index._read_vectors
    monkeypatch.setattr(index, "_read_vectors", lambda ids: reads.append(len(ids)) or real(ids))
    assert index.search(queries, 10) == expected
    assert reads[0] < len(every)  # fewer rows read than candidates
    assert [index.search(q, 10)[0] for q in queries] == expected


def test_rows_rewritten_in_place_are_encoded_again(synthetic) -> None:
    """requantize rewrites blobs under the same ids: the index re-encodes them."""
    from refserver.search.requantize import requantize

    ctx, _, queries = synthetic
    index = QuantizedIndex(ctx.db, dtype="int8")
    index.sync()
    before = index.search(queries, 10)
    requantize(ctx, "int8")
    index.sync()
    found, mat, _ = index._read_vectors(index._ids)
    assert np.array_equal(found, index._ids)
    # Each code is again the encoding of the row SQLite holds now (same quantizer).
    sq = faiss.downcast_index(index.index.index)
    pos = np.searchsorted(found, faiss.vector_to_array(index.index.id_map))
    assert np.array_equal(scan.codes_view(sq), sq.sa_encode(mat[pos]))
    assert np.allclose(index._err, index._errors(index.index, mat), atol=1e-7)
    after = index.search(queries, 10)
    assert after != before  # the scores are those of the int8 rows now
    assert after == [index.search(q, 10)[0] for q in queries]


@pytest.mark.parametrize("index", ["chroma", *DTYPES])
def test_batch_pages_equal_single_pages_with_filters_and_paging(
    synthetic, index: str, monkeypatch
) -> None:
    """Every batched page (total, results, scores, snippets) equals semantic_search's."""
    from refserver.search import batch as batch_mod

    ctx, _, vecs = synthetic
    rounds: list[int] = []
    real_hits = batch_mod.page_hits
    monkeypatch.setattr(
        batch_mod, "page_hits", lambda c, v, k, i: rounds.append(len(v)) or real_hits(c, v, k, i)
    )
    texts = [f"page {i % 40} of synthetic {i}" for i in range(len(vecs))]
    cases = [
        (Filters(), 10, 0),
        (Filters(), 5, 5),  # second page
        (Filters(year_from=2008), 10, 0),  # 20% of papers: more index rounds
        (Filters(year=2003), 4, 2),
        (Filters(title="no such title"), 10, 0),  # nothing passes: every round runs
    ]
    for filters, limit, offset in cases:
        rounds.clear()
        pages = batch_search(
            ctx, texts, filters=filters, limit=limit, offset=offset, index=index, vectors=vecs
        )  # type: ignore[arg-type]
        for t, v, page in zip(texts, vecs, pages, strict=True):
            one = semantic_search(ctx, t, filters, limit, offset, index=index, vector=v)  # type: ignore[arg-type]
            one.extra.clear()  # {"index": ...}: not part of a batch page
            assert page.public(t, limit, offset) == one.public(t, limit, offset)
        if filters.year is not None:
            assert all(r.year == filters.year for p in pages for r in p.results)
            assert any(p.results for p in pages)
        if filters.active():  # later rounds ask again only for the queries still short
            assert len(rounds) > 1 and rounds[0] == len(texts)
        else:
            assert rounds == [len(texts)]
