"""Batch search throughput alone, quicker to iterate on than ``bench/search.py``.

Same data recipe (loaded from ``bench/search.py``: real all-MiniLM-L6-v2 embeddings of
the dev corpus, pages clustered around them, real text queries). The library is
written once per size into ``<tmp>/refserver-bench-batch-<n>/`` and reused by later
runs (``--fresh`` rebuilds it); ChromaDB is only built with ``--chroma``.

Measured, wall and CPU time of this process, best of ``--repeat`` runs each:
- the index call alone (``QuantizedIndex.search``: 200 queries one call each vs one
  call with all of them; with ``--chroma`` the one ``collection.query``);
- end to end, 100 queries: ``semantic_search`` one by one vs ``batch_search``, with
  the queries already embedded and with the model;
- the model alone (one ``embed`` per query vs ``embed_queries``).
Also checks that every batched answer equals the one-by-one answer (public dicts).

    .venv/bin/python bench/search_batch.py [--sizes 10000 100000] [--profile int8]
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
_spec = importlib.util.spec_from_file_location("bench_search", ROOT / "bench" / "search.py")
assert _spec and _spec.loader
bs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bs)

from tests.conftest import make_settings  # noqa: E402

from refserver.context import AppContext  # noqa: E402
from refserver.embedding.model import get_embedder  # noqa: E402
from refserver.search import Filters, batch_search, semantic_search  # noqa: E402
from refserver.search.batch import embed_queries  # noqa: E402
from refserver.search.quantized import QuantizedIndex  # noqa: E402
from refserver.search.scan import MIN_BATCH  # noqa: E402
from refserver.search.tune import rebuild_collections  # noqa: E402
from refserver.storage.vectors import PAGES  # noqa: E402


def best(fn: Any, repeat: int, scale: float = 1.0) -> tuple[float, float]:
    """Fastest (wall, CPU) of ``repeat`` runs: the least disturbed by other load."""
    runs = [bs.timed(fn, scale) for _ in range(repeat)]
    return min(r[0] for r in runs), min(r[1] for r in runs)


def fmt(one: tuple[float, float], many: tuple[float, float], n: int) -> str:
    r = bs.ratio(one, many)
    return (
        f"{one[0] * 1000 / n:.3f} → {many[0] * 1000 / n:.3f} ms/query "
        f"({r[0]:.2f}× wall / {r[1]:.2f}× CPU)"
    )


def library(n: int, base: np.ndarray, texts: list[str], fresh: bool, chroma: bool) -> AppContext:
    data = Path(tempfile.gettempdir()) / f"refserver-bench-batch-{n}" / "data"
    marker = data.parent / "built"
    if fresh and data.parent.exists():
        import shutil

        shutil.rmtree(data.parent)
    ctx = AppContext(make_settings(data))
    if not marker.exists():
        vecs, src = bs.synth(base, n, np.random.default_rng(n))
        print(f"  {n}: SQLite bulk write {bs.bulk_library(ctx, vecs, texts, src):.1f} s")
        marker.write_text("sqlite\n")
    if chroma and "chroma" not in marker.read_text():
        t = time.perf_counter()
        rebuild_collections(ctx)
        print(f"  {n}: ChromaDB build {time.perf_counter() - t:.1f} s")
        marker.write_text("sqlite chroma\n")
    return ctx


def run(
    n: int, args: Any, base: np.ndarray, passages: list[str], q_texts: list[str], qv: np.ndarray
) -> None:
    ctx = library(n, base, passages, args.fresh, args.chroma)
    try:
        print(f"pages {n:,}")
        indexes = list(args.indexes)
        if args.chroma:
            col = ctx.vectors.collection(PAGES)
            inc = ["metadatas", "distances"]
            col.query(query_embeddings=qv[:1], n_results=10, include=inc)
            one = best(
                lambda: [
                    col.query(query_embeddings=q[None], n_results=10, include=inc) for q in qv
                ],
                args.repeat,
            )
            many = best(
                lambda: col.query(query_embeddings=qv, n_results=10, include=inc), args.repeat
            )
            print(f"  index chroma   K=10: {fmt(one, many, len(qv))}")
            indexes.append("chroma")
        for dtype in args.indexes:
            qi = QuantizedIndex(ctx.db, dtype=dtype)
            qi.sync()
            ctx.extras[f"search.quantized.{dtype}"] = qi
            qi.search(qv[:MIN_BATCH], 10)
            single = [qi.search(q, 10)[0] for q in qv]
            assert qi.search(qv, 10) == single, "batched index answers differ"
            one = best(lambda qi=qi: [qi.search(q, 10) for q in qv], args.repeat)
            many = best(lambda qi=qi: qi.search(qv, 10), args.repeat)
            print(f"  index {dtype:8s} K=10: {fmt(one, many, len(qv))}")
        t100, v100 = q_texts[:100], qv[:100]
        emb = ctx.embedder()
        emb.embed(t100[:8])
        f = Filters()
        for index in indexes:
            singles = [
                semantic_search(ctx, t, f, 10, 0, index=index, vector=v).public(t, 10, 0)
                for t, v in zip(t100, v100, strict=True)
            ]
            got = [
                p.public(t, 10, 0)
                for t, p in zip(
                    t100, batch_search(ctx, t100, limit=10, index=index, vectors=v100), strict=True
                )
            ]
            for a in singles:
                a.pop("index", None)
            same = np.mean([a == b for a, b in zip(singles, got, strict=True)])
            one_v = best(
                lambda index=index: [
                    semantic_search(ctx, t, f, 10, 0, index=index, vector=v)
                    for t, v in zip(t100, v100, strict=True)
                ],
                args.repeat,
            )
            many_v = best(
                lambda index=index: batch_search(ctx, t100, limit=10, index=index, vectors=v100),
                args.repeat,
            )
            print(f"  e2e {index:8s} embedded:   {fmt(one_v, many_v, 100)}; identical {same:.0%}")
            if args.model:
                one = best(
                    lambda index=index: [
                        semantic_search(ctx, t, f, 10, 0, index=index) for t in t100
                    ],
                    args.repeat,
                )
                many = best(
                    lambda index=index: batch_search(ctx, t100, limit=10, index=index), args.repeat
                )
                print(f"  e2e {index:8s} with model: {fmt(one, many, 100)}")
            if args.profile == index:
                prof = cProfile.Profile()
                prof.enable()
                for _ in range(3):
                    batch_search(ctx, t100, limit=10, index=index, vectors=v100)
                prof.disable()
                pstats.Stats(prof).sort_stats("cumulative").print_stats(30)
        if args.model:
            one = best(lambda: [emb.embed([t]) for t in t100], args.repeat)
            many = best(lambda: embed_queries(emb, t100), args.repeat)
            print(f"  model alone:            {fmt(one, many, 100)}")
    finally:
        ctx.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[10000, 100000])
    ap.add_argument("--indexes", nargs="+", default=["int8", "float16"])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--chroma", action="store_true")
    ap.add_argument("--model", action="store_true")
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--profile", default=None)
    args = ap.parse_args()
    t0 = time.perf_counter()
    emb = get_embedder()
    passages, queries = bs.corpus_text(1500, seed=1)
    import hashlib

    key = hashlib.sha256("\n".join([emb.revision, *passages, *queries[:200]]).encode()).hexdigest()[
        :16
    ]
    cache = Path(tempfile.gettempdir()) / f"refserver-bench-search-{key}.npz"
    if cache.exists():
        data = np.load(cache)
        base, qv = data["base"], data["qv"]
    else:
        base, qv = emb.embed(passages), emb.embed(queries[:200])
        np.savez(cache, base=base, qv=qv)
    for n in args.sizes:
        run(n, args, base, passages, queries[:200], qv)
    load = psutil.getloadavg()
    print(f"total {time.perf_counter() - t0:.0f} s; load average {load[0]:.2f} {load[1]:.2f}")


if __name__ == "__main__":
    main()
