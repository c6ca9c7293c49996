"""Search at 10k and 100k pages: recall@10 vs exact, latency, batch throughput, memory, build time.

Data. Real model embeddings anchor everything: the dev corpus PDFs are cut into
~60-word passages and embedded with the project's model (all-MiniLM-L6-v2,
~1,500 passages). Embedding 100k pages at ~40 passages/s would take 40 minutes,
so library pages are generated around those real embeddings: 70% are a real
passage vector plus Gaussian noise (cosine ~0.85 to it), 30% a blend of two
real passages plus noise. That keeps the clustered, anisotropic structure of
real embeddings (uniform random vectors are much harder for HNSW and unlike
real data, see STACK.md). Queries are real: 200 other 6–14-word windows of
corpus text, embedded by the model. Page text (for snippets) is the passage
text. Rows are bulk-written into SQLite (papers of 10 pages) and the ChromaDB
collections are built with ``refserver.search.tune.rebuild_collections`` — the
same rebuild-from-SQLite path ``refserver index rebuild`` uses.

Modes: ChromaDB HNSW (float32; the settings' parameters M=32, ef_construction
200, ef_search 200), and the compact in-memory index as int8 and as float16
(exhaustive scan of quantized codes, top 40 re-ranked exactly with float32 from
SQLite). Baseline in the same run: exact numpy search over float32 (a matrix-vector
product per query; the batch is matrix products of 64 queries, numpy's BLAS with
its default threads).

Batch vs one by one, wall and CPU time of this process, for: the index call alone
(Chroma: the one ``collection.query`` that ``page_hits`` makes, distances only; compact: its
``search`` and, separately, the code scan alone); end to end per index
(``semantic_search`` one by one vs ``batch_search``, with the model and with the
queries already embedded); and the model alone (one ``embed`` per query vs
``embed_queries``), which bounds the end-to-end gain.

    .venv/bin/python bench/search.py [--sizes 10000 100000] [--queries 200]
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pymupdf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import CORPUS, make_settings  # noqa: E402

from refserver.context import AppContext  # noqa: E402
from refserver.embedding.model import (  # noqa: E402
    checksum,
    encode_vector,
    get_embedder,
    normalize,
)
from refserver.search import Filters, batch_search, semantic_search  # noqa: E402
from refserver.search.batch import embed_queries  # noqa: E402
from refserver.search.quantized import QuantizedIndex  # noqa: E402
from refserver.search.scan import MIN_BATCH  # noqa: E402
from refserver.search.tune import exact_topk, rebuild_collections, tune  # noqa: E402
from refserver.storage.models import Page, Paper, Vector  # noqa: E402
from refserver.storage.vectors import PAGES  # noqa: E402

PAGES_PER_PAPER = 10
K = 10


def corpus_text(max_passages: int, seed: int) -> tuple[list[str], list[str]]:
    """(~60-word passages, 6–14-word query windows) from the dev corpus PDFs."""
    rng = random.Random(seed)
    words: list[list[str]] = []
    for pdf in sorted((CORPUS / "pdfs").glob("*.pdf")):
        with pymupdf.open(pdf) as doc:
            for page in doc:
                w = page.get_text().split()
                if len(w) > 40:
                    words.append(w)
    passages = [" ".join(w[i : i + 60]) for w in words for i in range(0, len(w) - 30, 60)]
    rng.shuffle(passages)
    passages = passages[:max_passages]
    queries = []
    for _ in range(400):
        w = rng.choice(words)
        n = rng.randint(6, 14)
        s = rng.randint(0, len(w) - n)
        queries.append(" ".join(w[s : s + n]))
    return passages, queries


def synth(base: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n page vectors clustered around real embeddings; returns (vectors, source passage)."""
    src = rng.integers(0, len(base), n)
    vec = base[src].copy()
    blend = rng.random(n) < 0.3
    other = base[rng.integers(0, len(base), n)]
    alpha = rng.uniform(0.3, 0.7, n)[:, None]
    vec[blend] = alpha[blend] * vec[blend] + (1 - alpha[blend]) * other[blend]
    vec += rng.normal(scale=0.033, size=vec.shape).astype(np.float32)
    return normalize(vec.astype(np.float32)), src


def bulk_library(
    ctx: Any, vecs: np.ndarray, texts: list[str], src: np.ndarray, dtype: str = "float32"
) -> float:
    """Write papers, pages and vectors (stored as ``dtype``) straight into SQLite; seconds.

    Also used by ``bench/vector_storage.py`` for its float16/int8 libraries.
    """
    t0 = time.perf_counter()
    emb = get_embedder()
    n_papers = len(vecs) // PAGES_PER_PAPER
    with ctx.db.write() as s:
        gen = s.info["generation"]
        papers, pages, rows = [], [], []

        def vec_row(pid: int, kind: str, page: int, cid: str, v: np.ndarray) -> dict[str, Any]:
            blob = encode_vector(v, dtype)
            return {
                "paper_id": pid,
                "kind": kind,
                "page_number": page,
                "chroma_id": cid,
                "model": emb.name,
                "model_revision": emb.revision,
                "dimension": 384,
                "vector": blob,
                "dtype": dtype,
                "checksum": checksum(blob),
                "generation": gen,
            }

        for i in range(n_papers):
            doc_id = f"bench-{i:07d}"
            papers.append(
                {
                    "id": i + 1,
                    "doc_id": doc_id,
                    "file_sha256": hashlib.sha256(doc_id.encode()).hexdigest(),
                    "page_count": PAGES_PER_PAPER,
                    "title": f"Synthetic paper {i}",
                    "authors": [],
                    "keywords": [],
                    "tags": [],
                    "field_sources": {},
                    "generation": gen,
                }
            )
            block = vecs[i * PAGES_PER_PAPER : (i + 1) * PAGES_PER_PAPER]
            for j, v in enumerate(block):
                row = i * PAGES_PER_PAPER + j
                pages.append(
                    {"paper_id": i + 1, "page_number": j + 1, "text": texts[src[row]], "quality": 1}
                )
                rows.append(vec_row(i + 1, "page", j + 1, f"{doc_id}:{j + 1}", v))
            rows.append(
                vec_row(i + 1, "paper", 0, doc_id, normalize(block.mean(0, keepdims=True))[0])
            )
        s.execute(Paper.__table__.insert(), papers)
        s.execute(Page.__table__.insert(), pages)
        for k in range(0, len(rows), 20000):
            s.execute(Vector.__table__.insert(), rows[k : k + 20000])
    return time.perf_counter() - t0


def timed(fn: Any, scale: float = 1.0) -> tuple[float, float]:
    """(wall s, CPU s of this process) of one call of ``fn``, times ``scale``."""
    gc.collect()
    t, c = time.perf_counter(), time.process_time()
    fn()
    return (time.perf_counter() - t) * scale, (time.process_time() - c) * scale


def ratio(one: tuple[float, float], many: tuple[float, float]) -> tuple[float, float]:
    """How many times faster the batch is than one by one: (wall, CPU)."""
    return one[0] / max(many[0], 1e-9), one[1] / max(many[1], 1e-9)


def pct(values: list[float], p: float) -> float:
    return float(np.percentile(np.array(values) * 1000, p))


def recall_at_k(found: list[list[str]], exact: list[list[str]]) -> float:
    return float(np.mean([len(set(f) & set(e)) / K for f, e in zip(found, exact, strict=True)]))


def hnsw_bytes(path: Path) -> int:
    return sum(
        f.stat().st_size
        for f in path.rglob("*.bin")
        if f.name in ("data_level0.bin", "link_lists.bin", "header.bin", "length.bin")
    )


def run_size(
    n: int, base: np.ndarray, texts: list[str], q_texts: list[str], qv: np.ndarray, do_tune: bool
) -> list[dict[str, Any]]:
    rng = np.random.default_rng(n)
    vecs, src = synth(base, n, rng)
    ids = [f"bench-{i // PAGES_PER_PAPER:07d}:{i % PAGES_PER_PAPER + 1}" for i in range(n)]
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-search-{n}-"))
    ctx = AppContext(make_settings(tmp / "data"))
    proc = psutil.Process()
    rows: list[dict[str, Any]] = []
    try:
        sql_s = bulk_library(ctx, vecs, texts, src)
        rss0 = proc.memory_info().rss
        t0 = time.perf_counter()
        rebuild_collections(ctx)
        chroma_build = time.perf_counter() - t0
        rss_chroma = proc.memory_info().rss - rss0

        # Exact baseline (numpy float32 in memory): one query is a matrix-vector
        # product (memory-bound), the batch matrix products of 64 queries (BLAS GEMM).
        def exact_single() -> None:
            for q in qv[:50]:
                exact_topk(vecs, q[None, :], K)

        exact_idx = exact_topk(vecs, qv, K)
        exact = [[ids[j] for j in row] for row in exact_idx]
        lat = []
        for q in qv[:50]:
            t = time.perf_counter()
            exact_topk(vecs, q[None, :], K)
            lat.append(time.perf_counter() - t)
        one = timed(exact_single, scale=len(qv) / 50)
        many = timed(lambda: exact_topk(vecs, qv, K))
        rows.append(
            {
                "size": n,
                "mode": "exact numpy float32 (baseline)",
                "recall": 1.0,
                "p50": pct(lat, 50),
                "p99": pct(lat, 99),
                "batch": ratio(one, many),
                "bytes_per_vec": 1536,
                "build_s": 0.0,
            }
        )

        # ChromaDB HNSW, float32: the call page_hits makes (one query() for a batch;
        # distances only since 2026-11-27 12:00 — ids carry doc_id and page — where
        # earlier runs measured it with metadatas too).
        col = ctx.vectors.collection(PAGES)
        include = ["distances"]
        col.query(query_embeddings=qv[:1], n_results=K, include=include)  # load
        found, lat = [], []
        for q in qv:
            t = time.perf_counter()
            res = col.query(query_embeddings=q[None, :], n_results=K, include=include)
            lat.append(time.perf_counter() - t)
            found.append(res["ids"][0])
        one = timed(
            lambda: [
                col.query(query_embeddings=q[None, :], n_results=K, include=include) for q in qv
            ]
        )
        many = timed(lambda: col.query(query_embeddings=qv, n_results=K, include=include))
        rows.append(
            {
                "size": n,
                "mode": "chroma float32 HNSW",
                "recall": recall_at_k(found, exact),
                "p50": pct(lat, 50),
                "p99": pct(lat, 99),
                "batch": ratio(one, many),
                "bytes_per_vec": None,  # filled after close (files flushed)
                "rss_mb": rss_chroma / 2**20,
                "build_s": chroma_build,
            }
        )
        chroma_row = rows[-1]

        # Compact in-memory index: int8 and float16, re-ranked from SQLite.
        for dtype in ("int8", "float16"):
            qi = QuantizedIndex(ctx.db, dtype=dtype)  # type: ignore[arg-type]
            t = time.perf_counter()
            qi.sync()
            build = time.perf_counter() - t
            ctx.extras[f"search.quantized.{dtype}"] = qi  # what semantic_search uses
            qi.search(qv[:MIN_BATCH], K)  # warm: the scan session, SQLite pages
            found, lat = [], []
            for q in qv:
                t = time.perf_counter()
                res = qi.search(q, K)[0]
                lat.append(time.perf_counter() - t)
                found.append([f"{d}:{p}" for d, p, _ in res])
            batched = [[f"{d}:{p}" for d, p, _ in r] for r in qi.search(qv, K)]
            one = timed(lambda qi=qi: [qi.search(q, K) for q in qv])
            many = timed(lambda qi=qi: qi.search(qv, K))
            # The scan alone: search()'s default re-rank window of 4 × K candidates.
            scan_one = timed(lambda qi=qi: [qi.candidates(q, 4 * K) for q in qv])
            scan_many = timed(lambda qi=qi: qi.candidates(qv, 4 * K))
            rows.append(
                {
                    "size": n,
                    "mode": f"{dtype} compact + exact re-rank",
                    "recall": recall_at_k(found, exact),
                    "recall_batch": recall_at_k(batched, exact),
                    "same_as_single": float(
                        np.mean([a == b for a, b in zip(found, batched, strict=True)])
                    ),
                    "p50": pct(lat, 50),
                    "p99": pct(lat, 99),
                    "batch": ratio(one, many),
                    "scan": ratio(scan_one, scan_many),
                    "scan_ms": (scan_one[0] * 1000 / len(qv), scan_many[0] * 1000 / len(qv)),
                    "bytes_per_vec": qi.bytes_per_vector(),
                    "build_s": build,
                }
            )

        # End to end per index: semantic_search one by one against batch_search
        # (embedding, index, SQLite grouping, snippets), with and without the model.
        emb = ctx.embedder()
        texts100, vecs100 = q_texts[:100], qv[:100]
        emb.embed(texts100[:8])  # warm
        model_one = timed(lambda: [emb.embed([qt]) for qt in texts100])
        model_many = timed(lambda: embed_queries(emb, texts100))
        e2e_rows = []
        for index in ("chroma", "int8", "float16"):
            lat, lat_v = [], []
            for qt, q in zip(texts100, vecs100, strict=True):
                t = time.perf_counter()
                semantic_search(ctx, qt, Filters(), 10, 0, index=index)  # type: ignore[arg-type]
                lat.append(time.perf_counter() - t)
                t = time.perf_counter()
                semantic_search(ctx, qt, Filters(), 10, 0, index=index, vector=q)  # type: ignore[arg-type]
                lat_v.append(time.perf_counter() - t)
            one = timed(
                lambda index=index: [
                    semantic_search(ctx, qt, Filters(), 10, 0, index=index) for qt in texts100
                ]
            )
            many = timed(lambda index=index: batch_search(ctx, texts100, limit=10, index=index))
            one_v = timed(
                lambda index=index: [
                    semantic_search(ctx, qt, Filters(), 10, 0, index=index, vector=q)
                    for qt, q in zip(texts100, vecs100, strict=True)
                ]
            )
            many_v = timed(
                lambda index=index: batch_search(
                    ctx, texts100, limit=10, index=index, vectors=vecs100
                )
            )
            e2e_rows.append(
                {
                    "size": n,
                    "index": index,
                    "p50": pct(lat, 50),
                    "p99": pct(lat, 99),
                    "p50_no_embed": pct(lat_v, 50),
                    "batch": ratio(one, many),
                    "batch_no_embed": ratio(one_v, many_v),
                    "ms": tuple(x[0] * 10 for x in (one, many, one_v, many_v)),
                    "model": ratio(model_one, model_many),
                    "model_ms": (model_one[0] * 10, model_many[0] * 10),
                }
            )
        chroma_row["e2e"] = e2e_rows

        if do_tune:
            t = time.perf_counter()
            out = tune(ctx, target=0.95, n_queries=100, max_build=n, apply=False)
            print(
                f"  tune at {n}: before {out['before']['params']} recall {out['before']['recall']:.3f}; "
                f"candidates "
                + ", ".join(
                    f"M{c['params']['max_neighbors']}/efC{c['params']['ef_construction']}/efS{c['params']['ef_search']}"
                    f"={c['recall']:.3f}"
                    for c in out["candidates"]
                )
                + f"; chosen {out['chosen']} ({time.perf_counter() - t:.1f} s)"
            )
        print(f"  {n}: SQLite bulk write {sql_s:.1f} s")
    finally:
        ctx.close()
    disk = hnsw_bytes(Path(ctx.settings.chroma_path))
    n_total = n + n // PAGES_PER_PAPER
    chroma_row["bytes_per_vec"] = disk / n_total if disk else None
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[10000, 100000])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--passages", type=int, default=1500)
    args = ap.parse_args()
    t_all = time.perf_counter()
    emb = get_embedder()
    passages, queries = corpus_text(args.passages, seed=1)
    t = time.perf_counter()
    key = hashlib.sha256(
        "\n".join([emb.revision, *passages, *queries[: args.queries]]).encode()
    ).hexdigest()[:16]
    cache = Path(tempfile.gettempdir()) / f"refserver-bench-search-{key}.npz"
    if cache.exists():  # same texts, same model: reuse (embedding is the slow part)
        data = np.load(cache)
        base, qv = data["base"], data["qv"]
        how = f"loaded from {cache}"
    else:
        base = emb.embed(passages)
        qv = emb.embed(queries[: args.queries])
        np.savez(cache, base=base, qv=qv)
        how = f"in {time.perf_counter() - t:.1f} s"
    print(f"embedded {len(passages)} corpus passages + {len(qv)} queries with {emb.name} {how}")
    rows: list[dict[str, Any]] = []
    for n in args.sizes:
        rows += run_size(n, base, passages, queries[: args.queries], qv, do_tune=n <= 20000)
    print()
    print(
        "Index call alone (K=10; compact: top 40 re-ranked from SQLite). Batch = one call "
        f"with all {args.queries} queries vs the same queries one call each, wall / CPU time."
    )
    print(
        "| pages | mode | recall@10 | p50 ms | p99 ms | batch vs one-by-one (wall / CPU) "
        "| scan alone: ms/query one-by-one → batched (wall / CPU ×) | bytes/vector "
        "| memory per 100k | build s |"
    )
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        bpv = r["bytes_per_vec"]
        mem = f"{bpv * 100_000 / 2**20:.0f} MiB" if bpv else "n/a"
        scan = (
            f"{r['scan_ms'][0]:.2f} → {r['scan_ms'][1]:.2f} ({r['scan'][0]:.1f}× / {r['scan'][1]:.1f}×)"
            if "scan" in r
            else "–"
        )
        print(
            f"| {r['size']:,} | {r['mode']} | {r['recall']:.3f} | {r['p50']:.2f} | {r['p99']:.2f} "
            f"| {r['batch'][0]:.1f}× / {r['batch'][1]:.1f}× | {scan} "
            f"| {f'{bpv:.0f}' if bpv else 'n/a'} | {mem} | {r['build_s']:.1f} |"
        )
    for r in rows:
        if "same_as_single" in r:
            print(
                f"  {r['size']:,} {r['mode']}: batch answers identical to one-by-one for "
                f"{r['same_as_single']:.1%} of queries (batch recall {r['recall_batch']:.3f})"
            )
    print()
    print(
        "End to end, 100 queries: semantic_search one by one vs batch_search (embed, index "
        "with 5× over-fetch, group pages in SQLite, snippets); ms per query one-by-one → batched."
    )
    print(
        "| pages | index | p50 ms | p99 ms | p50 ms, query embedded | with model: ms/query "
        "| batch × (wall / CPU) | query embedded: ms/query | batch × (wall / CPU) |"
    )
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        for e in r.get("e2e", []):
            ms = e["ms"]
            print(
                f"| {e['size']:,} | {e['index']} | {e['p50']:.1f} | {e['p99']:.1f} "
                f"| {e['p50_no_embed']:.1f} | {ms[0]:.2f} → {ms[1]:.2f} "
                f"| {e['batch'][0]:.1f}× / {e['batch'][1]:.1f}× | {ms[2]:.2f} → {ms[3]:.2f} "
                f"| {e['batch_no_embed'][0]:.1f}× / {e['batch_no_embed'][1]:.1f}× |"
            )
    for r in rows:
        for e in r.get("e2e", [])[:1]:
            one, many = e["model_ms"]
            print(
                f"  model alone at {e['size']:,}: {one:.2f} ms/query one by one, {many:.2f} "
                f"batched ({e['model'][0]:.1f}× wall, {e['model'][1]:.1f}× CPU); Chroma RSS "
                f"growth {r.get('rss_mb', 0):.0f} MiB"
            )
    for r in rows:
        for e in r.get("e2e", []):
            many = e["model_ms"][1]
            print(
                f"  bound {e['size']:,} {e['index']}: a batch cannot beat its own model call, so "
                f"end to end ≤ {e['ms'][0]:.2f} / {many:.2f} = {e['ms'][0] / max(many, 1e-9):.1f}× "
                f"(measured {e['batch'][0]:.1f}×)"
            )
    load = psutil.getloadavg()
    print(
        f"\ntotal {time.perf_counter() - t_all:.0f} s; load average at the end {load[0]:.1f} on {psutil.cpu_count()} cores"
    )


if __name__ == "__main__":
    main()
