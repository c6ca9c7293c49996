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
SQLite). Baseline in the same run: exact numpy search over float32.

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
from refserver.embedding.model import checksum, get_embedder, normalize, to_blob  # noqa: E402
from refserver.search import Filters, batch_search, semantic_search  # noqa: E402
from refserver.search.batch import embed_queries  # noqa: E402
from refserver.search.quantized import QuantizedIndex  # noqa: E402
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


def bulk_library(ctx: Any, vecs: np.ndarray, texts: list[str], src: np.ndarray) -> float:
    """Write papers, pages and vectors straight into SQLite (the truth); returns seconds."""
    t0 = time.perf_counter()
    emb = get_embedder()
    n_papers = len(vecs) // PAGES_PER_PAPER
    with ctx.db.write() as s:
        gen = s.info["generation"]
        paper_rows, page_rows, vec_rows = [], [], []
        for i in range(n_papers):
            doc_id = f"bench-{i:07d}"
            sha = hashlib.sha256(doc_id.encode()).hexdigest()
            paper_rows.append(
                {
                    "id": i + 1,
                    "doc_id": doc_id,
                    "file_sha256": sha,
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
                blob = to_blob(v)
                page_rows.append(
                    {
                        "paper_id": i + 1,
                        "page_number": j + 1,
                        "text": texts[src[row]],
                        "quality": 1.0,
                    }
                )
                vec_rows.append(
                    {
                        "paper_id": i + 1,
                        "kind": "page",
                        "page_number": j + 1,
                        "chroma_id": f"{doc_id}:{j + 1}",
                        "model": emb.name,
                        "model_revision": emb.revision,
                        "dimension": 384,
                        "vector": blob,
                        "checksum": checksum(blob),
                        "generation": gen,
                    }
                )
            pv = normalize(block.mean(axis=0, keepdims=True))[0]
            blob = to_blob(pv)
            vec_rows.append(
                {
                    "paper_id": i + 1,
                    "kind": "paper",
                    "page_number": 0,
                    "chroma_id": doc_id,
                    "model": emb.name,
                    "model_revision": emb.revision,
                    "dimension": 384,
                    "vector": blob,
                    "checksum": checksum(blob),
                    "generation": gen,
                }
            )
        s.execute(Paper.__table__.insert(), paper_rows)
        s.execute(Page.__table__.insert(), page_rows)
        for i in range(0, len(vec_rows), 20000):
            s.execute(Vector.__table__.insert(), vec_rows[i : i + 20000])
    return time.perf_counter() - t0


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

        # Exact baseline (numpy, float32 in memory).
        t0 = time.perf_counter()
        exact_idx = exact_topk(vecs, qv, K)
        exact_ms = (time.perf_counter() - t0) * 1000 / len(qv)
        exact = [[ids[j] for j in row] for row in exact_idx]
        single_exact = []
        for q in qv[:50]:
            t = time.perf_counter()
            exact_topk(vecs, q[None, :], K)
            single_exact.append(time.perf_counter() - t)
        rows.append(
            {
                "size": n,
                "mode": "exact numpy (baseline)",
                "recall": 1.0,
                "p50": pct(single_exact, 50),
                "p99": pct(single_exact, 99),
                "batch_x": (np.mean(single_exact) * 1000) / exact_ms,
                "batch_cpu_x": float("nan"),
                "bytes_per_vec": 1536,
                "build_s": 0.0,
            }
        )

        # ChromaDB HNSW, float32.
        found, lat = [], []
        c0 = time.process_time()
        for q in qv:
            t = time.perf_counter()
            res = ctx.vectors.query(PAGES, q, K)
            lat.append(time.perf_counter() - t)
            found.append(res["ids"][0])
        cpu_single = time.process_time() - c0
        t, c0 = time.perf_counter(), time.process_time()
        ctx.vectors.query(PAGES, qv, K)
        batch_s = time.perf_counter() - t
        cpu_batch = time.process_time() - c0
        rows.append(
            {
                "size": n,
                "mode": "chroma float32 HNSW",
                "recall": recall_at_k(found, exact),
                "p50": pct(lat, 50),
                "p99": pct(lat, 99),
                "batch_x": sum(lat) / batch_s,
                "batch_cpu_x": cpu_single / max(cpu_batch, 1e-9),
                "bytes_per_vec": None,  # filled after close (files flushed)
                "rss_mb": rss_chroma / 2**20,
                "build_s": chroma_build,
            }
        )
        chroma_row = rows[-1]

        # End to end: semantic_search (embedding, index, SQLite grouping, snippets).
        emb = ctx.embedder()
        e2e, e2e_noembed = [], []
        c0 = time.process_time()
        for qt in q_texts[:100]:
            t = time.perf_counter()
            semantic_search(ctx, qt, Filters(), 10, 0)
            e2e.append(time.perf_counter() - t)
        cpu_e2e = time.process_time() - c0
        for q, qt in zip(qv[:100], q_texts[:100], strict=True):
            t = time.perf_counter()
            semantic_search(ctx, qt, Filters(), 10, 0, vector=q)
            e2e_noembed.append(time.perf_counter() - t)
        t, c0 = time.perf_counter(), time.process_time()
        batch_search(ctx, q_texts[:100], limit=10)
        e2e_batch = time.perf_counter() - t
        cpu_e2e_batch = time.process_time() - c0
        t = time.perf_counter()
        batch_search(ctx, q_texts[:100], limit=10, vectors=qv[:100])
        e2e_batch_noembed = time.perf_counter() - t
        t = time.perf_counter()
        embed_queries(emb, q_texts[:100])
        embed_batch = time.perf_counter() - t
        chroma_row["e2e"] = {
            "p50": pct(e2e, 50),
            "p99": pct(e2e, 99),
            "p50_no_embed": pct(e2e_noembed, 50),
            "p99_no_embed": pct(e2e_noembed, 99),
            "batch_x": sum(e2e) / e2e_batch,
            "batch_cpu_x": cpu_e2e / max(cpu_e2e_batch, 1e-9),
            "batch_x_no_embed": sum(e2e_noembed) / e2e_batch_noembed,
            "embed_single_ms": (sum(e2e) - sum(e2e_noembed)) * 10,
            "embed_batch_ms": embed_batch * 10,
        }

        # Compact in-memory index: int8 and float16, re-ranked from SQLite.
        for dtype in ("int8", "float16"):
            qi = QuantizedIndex(ctx.db, dtype=dtype)  # type: ignore[arg-type]
            t = time.perf_counter()
            qi.sync()
            build = time.perf_counter() - t
            found, lat = [], []
            c0 = time.process_time()
            for q in qv:
                t = time.perf_counter()
                res = qi.search(q, K)[0]
                lat.append(time.perf_counter() - t)
                found.append([f"{d}:{p}" for d, p, _ in res])
            cpu_single = time.process_time() - c0
            t, c0 = time.perf_counter(), time.process_time()
            qi.search(qv, K)
            batch_s = time.perf_counter() - t
            cpu_batch = time.process_time() - c0
            rows.append(
                {
                    "size": n,
                    "mode": f"{dtype} compact + exact re-rank",
                    "recall": recall_at_k(found, exact),
                    "p50": pct(lat, 50),
                    "p99": pct(lat, 99),
                    "batch_x": sum(lat) / batch_s,
                    "batch_cpu_x": cpu_single / max(cpu_batch, 1e-9),
                    "bytes_per_vec": qi.bytes_per_vector(),
                    "build_s": build,
                }
            )
            del qi
            gc.collect()

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
        print(f"  {n}: SQLite bulk write {sql_s:.1f} s, exact batch {exact_ms:.2f} ms/query")
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
        "| pages | mode | recall@10 | p50 ms | p99 ms | batch vs one-by-one (wall) | (CPU) | bytes/vector | memory per 100k | build s |"
    )
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        bpv = r["bytes_per_vec"]
        mem = f"{bpv * 100_000 / 2**20:.0f} MiB" if bpv else "n/a"
        print(
            f"| {r['size']:,} | {r['mode']} | {r['recall']:.3f} | {r['p50']:.2f} | {r['p99']:.2f} "
            f"| {r['batch_x']:.1f}× | {r['batch_cpu_x']:.1f}× | {bpv:.0f} | {mem} | {r['build_s']:.1f} |"
            if bpv
            else f"| {r['size']:,} | {r['mode']} | {r['recall']:.3f} | {r['p50']:.2f} | {r['p99']:.2f} "
            f"| {r['batch_x']:.1f}× | {r['batch_cpu_x']:.1f}× | n/a | n/a | {r['build_s']:.1f} |"
        )
    print()
    for r in rows:
        if "e2e" in r:
            e = r["e2e"]
            print(
                f"semantic_search end to end at {r['size']:,} pages (embed query + Chroma + SQLite "
                f"group + snippet): p50 {e['p50']:.1f} ms, p99 {e['p99']:.1f} ms; with the query "
                f"already embedded p50 {e['p50_no_embed']:.1f} ms, p99 {e['p99_no_embed']:.1f} ms. "
                f"batch_search of 100 queries vs one by one: {e['batch_x']:.1f}× with embedding "
                f"({e['batch_cpu_x']:.1f}× in CPU time), "
                f"{e['batch_x_no_embed']:.1f}× without; embedding {e['embed_single_ms']:.1f} ms/query "
                f"alone vs {e['embed_batch_ms']:.1f} ms/query batched. Chroma RSS growth "
                f"{r.get('rss_mb', 0):.0f} MiB"
            )
    load = psutil.getloadavg()
    print(
        f"\ntotal {time.perf_counter() - t_all:.0f} s; load average at the end {load[0]:.1f} on {psutil.cpu_count()} cores"
    )


if __name__ == "__main__":
    main()
