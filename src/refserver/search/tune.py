"""HNSW parameter tuning and index rebuilds, measured against exact search.

ChromaDB's HNSW defaults can miss true neighbours; how often depends on the
data. ``tune`` samples realistic queries (short windows of real page text,
embedded by the model), computes their exact top-k with numpy over the float32
vectors in SQLite, and tries candidate parameters from cheapest to dearest on
temporary collections, keeping the first that reaches the target recall. When
the choice differs from the live collections, both are rebuilt from SQLite
under the write barrier (DESIGN.md §1, §2) and recall is measured again on the
real collection. The choice and both recalls are recorded in
``<data_dir>/index_tune.json`` and as a ``CheckRun(kind="index_tune")``.
"""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, select

from refserver.embedding.model import decode_vectors
from refserver.storage.library import upsert_rows
from refserver.storage.models import CheckRun, Page, Paper, Vector, utcnow
from refserver.storage.vectors import PAGES, PAPERS

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
TUNE_FILE = "index_tune.json"
KIND_OF = {PAGES: "page", PAPERS: "paper"}
# (max_neighbors M, ef_construction, ef_search), cheapest first: query cost grows
# with ef_search, memory and build time with M and ef_construction.
CANDIDATES: list[tuple[int, int, int]] = [
    (16, 100, 50),
    (16, 100, 100),
    (16, 200, 200),
    (32, 200, 200),
    (32, 200, 400),
    (48, 400, 800),
    (64, 600, 1200),
]


def _noop(_stage: str, _done: int, _total: int) -> None:
    return None


def hnsw_dict(m: int, efc: int, efs: int) -> dict[str, Any]:
    return {"space": "cosine", "max_neighbors": m, "ef_construction": efc, "ef_search": efs}


# --- data -------------------------------------------------------------------------
def load_vectors(ctx: Any, kind: str = "page") -> tuple[list[str], np.ndarray]:
    """Every vector of ``kind`` from SQLite: (chroma ids, float32 matrix), each row
    decoded by its stored dtype."""
    with ctx.db.read() as s:
        rows = s.execute(
            select(Vector.chroma_id, Vector.vector, Vector.dtype, Vector.dimension)
            .where(Vector.kind == kind)
            .order_by(Vector.id)
        ).all()
    if not rows:
        return [], np.zeros((0, 384), dtype=np.float32)
    mat = decode_vectors([r[1] for r in rows], [r[2] for r in rows], int(rows[0][3]))
    return [r[0] for r in rows], np.ascontiguousarray(mat, dtype=np.float32)


def sample_queries(
    ctx: Any, n: int, seed: int = 0, vectors: np.ndarray | None = None
) -> np.ndarray:
    """Query vectors like real ones: 6–14-word windows of random pages, embedded.

    Falls back to page vectors with noise when pages have no text (never the
    page vectors themselves: a query equal to an indexed vector is too easy).
    """
    rng = random.Random(seed)
    texts: list[str] = []
    with ctx.db.read() as s:
        page_ids = list(s.execute(select(Page.id)).scalars())
        picks = rng.sample(page_ids, min(n * 2, len(page_ids)))
        bodies = s.execute(select(Page.text).where(Page.id.in_(picks))).scalars().all()
    for body in bodies:
        words = (body or "").split()
        if len(words) >= 6:
            size = rng.randint(6, 14)
            start = rng.randint(0, max(0, len(words) - size))
            texts.append(" ".join(words[start : start + size]))
        if len(texts) >= n:
            break
    if len(texts) >= max(1, n // 2):
        return ctx.embedder().embed(texts)
    if vectors is None or not len(vectors):
        return np.zeros((0, 384), dtype=np.float32)
    nrng = np.random.default_rng(seed)
    base = vectors[nrng.choice(len(vectors), size=min(n, len(vectors)), replace=False)]
    noisy = base + nrng.normal(scale=0.03, size=base.shape).astype(np.float32)
    return (noisy / np.linalg.norm(noisy, axis=1, keepdims=True)).astype(np.float32)


def exact_topk(mat: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Indices of the exact top-k by cosine (rows are unit vectors), best first."""
    k = min(k, len(mat))
    out = np.empty((len(queries), k), dtype=np.int64)
    for i in range(0, len(queries), 64):
        sims = queries[i : i + 64] @ mat.T
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.take_along_axis(sims, part, axis=1).argsort(axis=1)[:, ::-1]
        out[i : i + 64] = np.take_along_axis(part, order, axis=1)
    return out


def recall(found: list[list[str]], exact: list[list[str]]) -> float:
    if not exact:
        return 1.0
    hits = [len(set(f) & set(e)) / max(1, len(e)) for f, e in zip(found, exact, strict=True)]
    return float(np.mean(hits))


def collection_recall(
    col: Any, queries: np.ndarray, exact_ids: list[list[str]], k: int
) -> tuple[float, float]:
    """(recall@k, mean ms per query) of one Chroma collection, queried in one call."""
    t0 = time.perf_counter()
    res = col.query(query_embeddings=queries, n_results=k, include=[])
    ms = (time.perf_counter() - t0) * 1000 / max(1, len(queries))
    return recall(res["ids"], exact_ids), ms


# --- rebuild ------------------------------------------------------------------------
def iter_vector_rows(
    ctx: Any, kind: str, chunk: int = 4000
) -> Iterator[list[tuple[Paper, Vector]]]:
    last = 0
    while True:
        with ctx.db.read() as s:
            rows = s.execute(
                select(Paper, Vector)
                .join(Vector, Vector.paper_id == Paper.id)
                .where(Vector.kind == kind, Vector.id > last)
                .order_by(Vector.id)
                .limit(chunk)
            ).all()
        if not rows:
            return
        yield [(p, v) for p, v in rows]
        last = rows[-1][1].id


def rebuild_collections(
    ctx: Any,
    hnsw: dict[str, Any] | None = None,
    names: tuple[str, ...] = (PAGES, PAPERS),
    progress: Progress = _noop,
) -> dict[str, int]:
    """Recreate collections (with new HNSW params) from the vectors in SQLite.

    Holds the write barrier for the whole rebuild so no ingest writes to a
    collection that is being replaced; readers keep working on SQLite.
    """
    if ctx.vectors is None:
        raise RuntimeError("no vector index in this process")
    counts: dict[str, int] = {}
    with ctx.db.barrier():
        for name in names:
            kind = KIND_OF[name]
            with ctx.db.read() as s:
                total = s.execute(
                    select(func.count()).select_from(Vector).where(Vector.kind == kind)
                ).scalar_one()
            ctx.vectors.reset_collection(name, hnsw)
            done = 0
            progress(f"rebuild {name}", 0, total)
            for rows in iter_vector_rows(ctx, kind):
                upsert_rows(ctx.vectors, name, [(v, p) for p, v in rows])
                done += len(rows)
                progress(f"rebuild {name}", done, total)
            counts[name] = done
    return counts


# --- tuning -------------------------------------------------------------------------
def current_params(ctx: Any, name: str = PAGES) -> dict[str, Any]:
    conf = ctx.vectors.configuration(name)
    return {k: conf.get(k) for k in ("space", "max_neighbors", "ef_construction", "ef_search")}


def evaluate(
    ctx: Any,
    params: dict[str, Any],
    ids: list[str],
    mat: np.ndarray,
    queries: np.ndarray,
    exact_ids: list[list[str]],
    k: int,
) -> dict[str, Any]:
    """Recall and build time of ``params`` on a temporary collection (then dropped)."""
    name = f"tune-{uuid.uuid4().hex[:12]}"
    col = ctx.vectors.client.create_collection(
        name, embedding_function=None, configuration={"hnsw": dict(params)}
    )
    try:
        t0 = time.perf_counter()
        for i in range(0, len(ids), 4000):
            col.add(ids=ids[i : i + 4000], embeddings=mat[i : i + 4000])
        build = time.perf_counter() - t0
        rec, ms = collection_recall(col, queries, exact_ids, k)
    finally:
        ctx.vectors.client.delete_collection(name)
    return {
        "params": params,
        "recall": round(rec, 4),
        "build_s": round(build, 2),
        "ms_per_query": round(ms, 3),
    }


def tune(
    ctx: Any,
    *,
    target: float = 0.95,
    k: int = 10,
    n_queries: int = 200,
    max_build: int = 20000,
    apply: bool = True,
    progress: Progress = _noop,
    seed: int = 0,
) -> dict[str, Any]:
    """Pick the cheapest HNSW parameters reaching ``target`` recall@k; rebuild if they changed."""
    started = time.time()
    ids, mat = load_vectors(ctx, "page")
    if not ids:
        raise ValueError("the library has no page vectors to tune on")
    progress("queries", 0, n_queries)
    queries = sample_queries(ctx, n_queries, seed=seed, vectors=mat)
    progress("queries", len(queries), n_queries)
    exact_full = exact_topk(mat, queries, k)
    exact_full_ids = [[ids[j] for j in row] for row in exact_full]
    before = current_params(ctx)
    live = ctx.vectors.collection(PAGES)
    recall_before, ms_before = collection_recall(live, queries, exact_full_ids, k)

    rng = np.random.default_rng(seed)
    if len(ids) > max_build:
        sel = np.sort(rng.choice(len(ids), size=max_build, replace=False))
        s_ids, s_mat = [ids[i] for i in sel], mat[sel]
    else:
        s_ids, s_mat = ids, mat
    s_exact = exact_topk(s_mat, queries, k)
    s_exact_ids = [[s_ids[j] for j in row] for row in s_exact]

    tried: list[dict[str, Any]] = []
    chosen: dict[str, Any] | None = None
    for i, (m, efc, efs) in enumerate(CANDIDATES):
        progress("candidates", i, len(CANDIDATES))
        result = evaluate(ctx, hnsw_dict(m, efc, efs), s_ids, s_mat, queries, s_exact_ids, k)
        tried.append(result)
        if result["recall"] >= target:
            chosen = result["params"]
            break
    progress("candidates", len(CANDIDATES), len(CANDIDATES))
    if chosen is None:  # nothing reached the target: take the best measured
        chosen = max(tried, key=lambda r: r["recall"])["params"]
    changed = any(
        before.get(key) != chosen[key] for key in ("max_neighbors", "ef_construction", "ef_search")
    )
    rebuilt = False
    recall_after, ms_after = recall_before, ms_before
    if changed and apply:
        rebuild_collections(ctx, chosen, progress=progress)
        rebuilt = True
        recall_after, ms_after = collection_recall(
            ctx.vectors.collection(PAGES), queries, exact_full_ids, k
        )
    outcome = {
        "target": target,
        "k": k,
        "queries": int(len(queries)),
        "vectors": len(ids),
        "evaluated_on": len(s_ids),
        "before": {
            "params": before,
            "recall": round(recall_before, 4),
            "ms_per_query": round(ms_before, 3),
        },
        "chosen": chosen,
        "applied": rebuilt or not changed,
        "rebuilt": rebuilt,
        "recall": round(recall_after, 4),
        "ms_per_query": round(ms_after, 3),
        "reached_target": recall_after >= target if (rebuilt or not changed) else None,
        "candidates": tried,
        "generation": ctx.db.generation(),
        "seconds": round(time.time() - started, 2),
        "finished_at": utcnow().isoformat(),
    }
    record(ctx, outcome)
    return outcome


def tune_file(ctx: Any) -> Path:
    return Path(ctx.settings.data_dir) / TUNE_FILE


def record(ctx: Any, outcome: dict[str, Any]) -> None:
    """Keep the result in the data folder (read at start) and in the check history."""
    tune_file(ctx).write_text(json.dumps(outcome, indent=2, default=str))
    with ctx.db.write(bump=False) as s:
        s.add(
            CheckRun(
                kind="index_tune",
                status="ok" if outcome.get("reached_target") is not False else "below_target",
                finished_at=utcnow(),
                total_issues=0,
                result=outcome,
            )
        )


def recorded(ctx: Any) -> dict[str, Any] | None:
    path = tune_file(ctx)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        log.warning("unreadable %s; ignoring the recorded tuning", path)
        return None


def apply_recorded_params(ctx: Any) -> None:
    """Make later collection rebuilds use the tuned parameters, not the settings' defaults."""
    rec = recorded(ctx)
    if rec and rec.get("applied") and ctx.vectors is not None and rec.get("chosen"):
        ctx.vectors.hnsw.update({k: v for k, v in rec["chosen"].items() if k != "space"})


def index_stats(ctx: Any) -> dict[str, Any]:
    """Counts in SQLite and Chroma, HNSW parameters, on-disk HNSW size and the last tuning."""
    out: dict[str, Any] = {"collections": {}}
    with ctx.db.read() as s:
        in_sql = dict(s.execute(select(Vector.kind, func.count()).group_by(Vector.kind)).all())
    hnsw_bytes = _hnsw_folder_bytes(ctx)
    for name in (PAGES, PAPERS):
        n = ctx.vectors.count(name) if ctx.vectors is not None else 0
        out["collections"][name] = {
            "sqlite_vectors": int(in_sql.get(KIND_OF[name], 0)),
            "chroma_entries": n,
            "hnsw": current_params(ctx, name) if ctx.vectors is not None else {},
        }
    total = sum(c["chroma_entries"] for c in out["collections"].values())
    out["hnsw_disk_bytes"] = hnsw_bytes
    out["bytes_per_vector"] = {
        "chroma_float32_hnsw": round(hnsw_bytes / total, 1) if total else None,
        "int8": 384 + 8,
        "float16": 768 + 8,
    }
    from refserver.search.requantize import storage_stats

    out["sqlite_storage"] = storage_stats(ctx)  # per dtype: rows and blob bytes
    out["last_tune"] = recorded(ctx)
    return out


def _hnsw_folder_bytes(ctx: Any) -> int:
    path = getattr(ctx.vectors, "path", None) if ctx.vectors is not None else None
    if not path or not Path(path).exists():
        return 0
    return sum(
        f.stat().st_size
        for f in Path(path).rglob("*.bin")
        if f.name in ("data_level0.bin", "link_lists.bin", "header.bin", "length.bin")
    )
