"""Vectors stored as float32 / float16 / int8 in SQLite: bytes, recall, latency.

For each library size and each ``vector_storage`` mode the same library is
written to SQLite with ``encode_vector`` (the function ``Library`` uses), then:

- SQLite bytes: the blob per vector, the ``vectors`` table per vector (blob plus
  the row's other columns: ids, model, revision, sha256 checksum, ...) and its
  indexes, measured with SQLite's ``dbstat`` after ``VACUUM``; and the same per
  100k pages (100k page vectors + 10k paper vectors: papers of 10 pages).
- recall@10 against exact float32 search (numpy over the ORIGINAL float32
  vectors, the truth) of: an exact scan over the decoded stored vectors (what
  the storage alone loses), and the compact in-memory index (int8 and float16
  codes, ``refserver.search.quantized``) whose top-40 candidates are re-ranked
  with the stored vectors decoded from SQLite; at sizes up to 20k also ChromaDB
  HNSW built from the stored rows (``rebuild_collections``: it holds the decoded
  vectors). p50 of one compact-index query (scan + SQLite read + decode + re-rank).
- at the smallest size: ``refserver index requantize`` float32 → int8 of the
  whole library, ChromaDB upserts included.

Data: the recipe of ``bench/search.py`` (real all-MiniLM-L6-v2 embeddings of
~1,500 dev-corpus passages; library pages generated around them: 70% a passage
vector + noise, 30% a blend of two + noise; 200 real 6–14-word query windows,
embedded by the model). It reuses that script's embedding cache in the temp dir.

    flock /tmp/bench.lock .venv/bin/python bench/vector_storage.py [--sizes 10000 100000]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import make_settings  # noqa: E402

from refserver.context import AppContext  # noqa: E402
from refserver.embedding.model import (  # noqa: E402
    decode_vectors,
    encode_vector,
    get_embedder,
)
from refserver.search.quantized import QuantizedIndex  # noqa: E402
from refserver.search.requantize import requantize  # noqa: E402
from refserver.search.tune import exact_topk, load_vectors, rebuild_collections  # noqa: E402
from refserver.storage.vectors import PAGES  # noqa: E402

PAGES_PER_PAPER = 10
K = 10
STORAGES = ("float32", "float16", "int8")
CHROMA_MAX = 20000


# --- data: the recipe of bench/search.py (loaded from that script) ---------------------
_spec = importlib.util.spec_from_file_location("bench_search", ROOT / "bench" / "search.py")
assert _spec is not None and _spec.loader is not None
_bench_search = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_bench_search)
corpus_text = _bench_search.corpus_text
synth = _bench_search.synth


def embedded(passages: list[str], queries: list[str]) -> tuple[np.ndarray, np.ndarray, str]:
    emb = get_embedder()
    key = hashlib.sha256("\n".join([emb.revision, *passages, *queries]).encode()).hexdigest()[:16]
    cache = Path(tempfile.gettempdir()) / f"refserver-bench-search-{key}.npz"
    if cache.exists():
        data = np.load(cache)
        return data["base"], data["qv"], f"loaded from {cache}"
    t = time.perf_counter()
    base, qv = emb.embed(passages), emb.embed(queries)
    np.savez(cache, base=base, qv=qv)
    return base, qv, f"in {time.perf_counter() - t:.0f} s"


# --- a library in one storage mode ---------------------------------------------------------
def write_library(ctx: Any, vecs: np.ndarray, texts: list[str], src: np.ndarray, dtype: str) -> int:
    """Papers, pages and vectors (encoded as ``dtype``) straight into SQLite; vectors written."""
    _bench_search.bulk_library(ctx, vecs, texts, src, dtype)
    return len(vecs) + len(vecs) // PAGES_PER_PAPER


def sqlite_bytes(ctx: Any) -> dict[str, int]:
    """Bytes of the vectors table, its indexes, the blobs and the whole file (after VACUUM)."""
    path = ctx.db.engine.url.database
    c = sqlite3.connect(path, isolation_level=None)
    try:
        c.execute("VACUUM")
        by_name = dict(c.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name").fetchall())
        idx = [
            r[0]
            for r in c.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'vectors'"
            )
        ]
        blobs = c.execute("SELECT SUM(length(vector)) FROM vectors").fetchone()[0]
        pages = c.execute("PRAGMA page_count").fetchone()[0]
        page_size = c.execute("PRAGMA page_size").fetchone()[0]
    finally:
        c.close()
    return {
        "table": int(by_name.get("vectors", 0)),
        "indexes": int(sum(by_name.get(i, 0) for i in idx)),
        "blobs": int(blobs or 0),
        "file": int(pages * page_size),
    }


def recall(found: list[list[str]], exact: list[list[str]]) -> float:
    return float(np.mean([len(set(f) & set(e)) / K for f, e in zip(found, exact, strict=True)]))


def run_size(n: int, base: np.ndarray, texts: list[str], qv: np.ndarray) -> list[dict[str, Any]]:
    rng = np.random.default_rng(n)
    vecs, src = synth(base, n, rng)
    ids = [f"bench-{i // PAGES_PER_PAPER:07d}:{i % PAGES_PER_PAPER + 1}" for i in range(n)]
    exact = [[ids[j] for j in row] for row in exact_topk(vecs, qv, K)]
    out: list[dict[str, Any]] = []
    for dtype in STORAGES:
        tmp = Path(tempfile.mkdtemp(prefix=f"bench-vstore-{n}-{dtype}-"))
        with_chroma = n <= CHROMA_MAX
        ctx = AppContext(
            make_settings(tmp / "data", vector_storage=dtype), with_vectors=with_chroma
        )
        try:
            t0 = time.perf_counter()
            n_vec = write_library(ctx, vecs, texts, src, dtype)
            write_s = time.perf_counter() - t0
            size = sqlite_bytes(ctx)
            r: dict[str, Any] = {"pages": n, "storage": dtype, "vectors": n_vec, "write_s": write_s}
            r.update({k: v / n_vec for k, v in size.items()})
            # What the storage alone loses: exact scan over the decoded stored vectors.
            s_ids, mat = load_vectors(ctx, "page")
            d = np.linalg.norm(mat - vecs, axis=1)
            r["max_l2_error"] = float(d.max())
            r["min_cosine"] = float((mat * vecs).sum(1).min())
            r["recall_exact_decoded"] = recall(
                [[s_ids[j] for j in row] for row in exact_topk(mat, qv, K)], exact
            )
            for index in ("int8", "float16"):
                q = QuantizedIndex(ctx.db, dtype=index)  # type: ignore[arg-type]
                q.sync()
                found = [[f"{d}:{p}" for d, p, _ in row] for row in q.search(qv, K)]
                r[f"recall_{index}_index"] = recall(found, exact)
                lat = []
                for v in qv[:100]:
                    t = time.perf_counter()
                    q.search(v[None, :], K)
                    lat.append(time.perf_counter() - t)
                r[f"p50_{index}_index_ms"] = float(np.percentile(lat, 50) * 1000)
                r[f"index_{index}_bytes"] = q.bytes_per_vector()
            if with_chroma:
                rebuild_collections(ctx)
                res = ctx.vectors.collection(PAGES).query(
                    query_embeddings=qv, n_results=K, include=[]
                )
                r["recall_chroma"] = recall(res["ids"], exact)
                if dtype == "float32":
                    # Convert the whole library in place, ChromaDB upserts included.
                    t = time.perf_counter()
                    conv = requantize(ctx, "int8")
                    r["requantize_s"] = time.perf_counter() - t
                    r["requantize_rows"] = conv["converted"]
                    assert conv["complete"]
            out.append(r)
            print(
                f"{n:,} pages, {dtype}: blob {r['blobs']:.0f} B, table {r['table']:.0f} B/vector,"
                f" recall exact-decoded {r['recall_exact_decoded']:.3f}, int8 index "
                f"{r['recall_int8_index']:.3f}, float16 index {r['recall_float16_index']:.3f}"
                + (f", chroma {r['recall_chroma']:.3f}" if "recall_chroma" in r else ""),
                flush=True,
            )
        finally:
            ctx.close()
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[10000, 100000])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--passages", type=int, default=1500)
    args = ap.parse_args()
    t_all = time.perf_counter()
    passages, queries = corpus_text(args.passages, seed=1)
    base, qv, how = embedded(passages, queries[: args.queries])
    print(f"{len(passages)} corpus passages + {len(qv)} queries embedded ({how})")
    # Sanity: the decode of real embeddings (not the synthetic pages) per storage.
    for dtype in STORAGES:
        back = decode_vectors(
            [encode_vector(v, dtype) for v in base], [dtype] * len(base), base.shape[1]
        )
        print(f"real embeddings as {dtype}: min cosine {(back * base).sum(1).min():.7f}")
    rows: list[dict[str, Any]] = []
    for n in args.sizes:
        rows += run_size(n, base, passages, qv)
    per100k = 1.1 * 100_000 / 2**20  # vectors per 100k pages (10 pages + 1 paper vector) in MiB
    print()
    print(
        "| pages | storage | blob B | vectors table B/vector (+ indexes) | SQLite vectors "
        "per 100k pages | recall@10 exact scan of stored | int8 index + re-rank | float16 "
        "index + re-rank | ChromaDB HNSW | p50 ms int8 index |"
    )
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        chroma = f"{r['recall_chroma']:.3f}" if "recall_chroma" in r else "–"
        print(
            f"| {r['pages']:,} | {r['storage']} | {r['blobs']:.0f} | {r['table']:.0f} "
            f"(+{r['indexes']:.0f}) | {(r['table'] + r['indexes']) * per100k:.0f} MiB "
            f"| {r['recall_exact_decoded']:.3f} | {r['recall_int8_index']:.3f} "
            f"| {r['recall_float16_index']:.3f} | {chroma} | {r['p50_int8_index_ms']:.2f} |"
        )
    print()
    for r in rows:
        print(
            f"{r['pages']:,} {r['storage']}: whole SQLite file {r['file'] * 1.1 * 100_000 / 2**20:.0f}"
            f" MiB per 100k pages (synthetic ~60-word page text), min cosine to float32 "
            f"{r['min_cosine']:.6f}, write {r['write_s']:.1f} s, compact index "
            f"{r['index_int8_bytes']:.0f} B (int8) / {r['index_float16_bytes']:.0f} B (float16) "
            f"per vector, p50 float16 index {r['p50_float16_index_ms']:.2f} ms"
            + (
                f"; requantize float32→int8 of {r['requantize_rows']:,} rows incl. ChromaDB: "
                f"{r['requantize_s']:.1f} s"
                if "requantize_s" in r
                else ""
            )
        )
    load = psutil.getloadavg()
    print(
        f"\ntotal {time.perf_counter() - t_all:.0f} s; load average at the end {load[0]:.1f} "
        f"on {psutil.cpu_count()} cores"
    )


if __name__ == "__main__":
    main()
