"""Re-encode an existing library's stored vectors (``refserver index requantize``).

``settings.vector_storage`` only decides how NEW vector rows are written; this
converts the rows already in SQLite to another encoding (``float32``,
``float16`` or ``int8``, layouts in :mod:`refserver.embedding.model`).

Each batch is one short write transaction (DESIGN.md §2): the rows are decoded
by their own ``dtype``, re-encoded, given a new checksum (sha256 of the new
blob) and the new library generation, and then — still under the write barrier,
as ``Library.add_paper`` does — upserted into ChromaDB, which holds the decoded
(dequantized, unit) vector. The conversion is resumable by construction: rows
already in the target dtype are never selected, so a run stopped at any point
(Ctrl-C, crash, ``limit``) is finished by running it again. A run that converted
everything then refreshes ChromaDB from SQLite: every entry whose checksum or
generation differs from its row (a crash between a batch's commit and its
upsert) is rewritten from SQLite. It never deletes entries; ``refserver check
--fix`` owns that.

Lossy directions (to a smaller encoding) lose precision for good: int8 keeps
cosine >= 0.9999 to the original float32 (measured, see docs/benchmarks.md),
float16 >= 0.9999999. Converting back up stores the already-rounded values in
more bytes; it cannot restore precision (only re-embedding the text can).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from sqlalchemy import func, select

from refserver.embedding.model import (
    VECTOR_DTYPES,
    checksum,
    decode_vector,
    encode_vector,
)
from refserver.storage.library import chroma_metadata, upsert_rows
from refserver.storage.models import Paper, Vector
from refserver.storage.vectors import PAGES, PAPERS

Progress = Callable[[str, int, int], None]
PRECISION = {"int8": 0, "float16": 1, "float32": 2}
COLLECTION_OF = {"page": PAGES, "paper": PAPERS}
KIND_OF = {PAGES: "page", PAPERS: "paper"}
BATCH = 500


def _noop(_stage: str, _done: int, _total: int) -> None:
    return None


def check_dtype(dtype: str) -> str:
    if dtype not in VECTOR_DTYPES:
        raise ValueError(f"unknown vector storage {dtype!r}; use {', '.join(VECTOR_DTYPES)}")
    return dtype


def storage_stats(ctx: Any) -> dict[str, dict[str, int]]:
    """Per stored dtype: number of vector rows and bytes of their blobs."""
    with ctx.db.read() as s:
        rows = s.execute(
            select(
                Vector.dtype, func.count(), func.coalesce(func.sum(func.length(Vector.vector)), 0)
            )
            .group_by(Vector.dtype)
            .order_by(Vector.dtype)
        ).all()
    return {str(d): {"vectors": int(n), "bytes": int(b)} for d, n, b in rows}


def lossy_sources(stats: dict[str, dict[str, int]], to: str) -> dict[str, int]:
    """Rows (by dtype) that converting to ``to`` would round: higher precision than it."""
    return {
        d: v["vectors"]
        for d, v in stats.items()
        if v["vectors"] and PRECISION.get(d, 2) > PRECISION[to]
    }


def upward_sources(stats: dict[str, dict[str, int]], to: str) -> dict[str, int]:
    """Rows (by dtype) stored with LESS precision than ``to``: converting cannot restore it."""
    return {
        d: v["vectors"]
        for d, v in stats.items()
        if v["vectors"] and PRECISION.get(d, 2) < PRECISION[to]
    }


def requantize(
    ctx: Any,
    to: str,
    *,
    batch: int = BATCH,
    limit: int | None = None,
    refresh: bool = True,
    progress: Progress = _noop,
) -> dict[str, Any]:
    """Re-encode every vector row not yet in ``to``; see the module docstring.

    ``limit`` stops after that many rows (the rest is converted by the next run).
    Returns counts, bytes before/after and what the ChromaDB refresh rewrote.
    """
    check_dtype(to)
    started = time.monotonic()
    before = storage_stats(ctx)
    with ctx.db.read() as s:
        todo = s.execute(
            select(func.count()).select_from(Vector).where(Vector.dtype != to)
        ).scalar_one()
    total = todo if limit is None else min(todo, max(0, limit))
    converted, failed, last = 0, [], 0
    progress("requantize", 0, total)
    while converted < total:
        want = min(max(1, batch), total - converted)
        with ctx.db.read() as s:
            ids = list(
                s.execute(
                    select(Vector.id)
                    .where(Vector.dtype != to, Vector.id > last)
                    .order_by(Vector.id)
                    .limit(want)
                ).scalars()
            )
        if not ids:
            break  # rows deleted meanwhile
        last = ids[-1]
        payload: dict[str, list[tuple[str, Any, dict[str, Any]]]] = {PAGES: [], PAPERS: []}
        with ctx.db.barrier():
            with ctx.db.write() as s:
                gen = s.info["generation"]
                for row, paper in s.execute(
                    select(Vector, Paper)
                    .join(Paper, Paper.id == Vector.paper_id)
                    .where(Vector.id.in_(ids), Vector.dtype != to)
                ).all():
                    try:
                        vec = decode_vector(row.vector, row.dtype, row.dimension)
                    except ValueError as exc:  # unreadable row: left for `refserver check`
                        failed.append({"chroma_id": row.chroma_id, "error": str(exc)})
                        continue
                    blob = encode_vector(vec, to)
                    row.vector, row.dtype, row.checksum = blob, to, checksum(blob)
                    row.generation = gen
                    name = COLLECTION_OF.get(row.kind)
                    if name is not None:
                        payload[name].append(
                            (
                                row.chroma_id,
                                decode_vector(blob, to, row.dimension),
                                chroma_metadata(paper, row),
                            )
                        )
                    converted += 1
            if ctx.vectors is not None:
                for name, items in payload.items():
                    if items:
                        ctx.vectors.upsert(
                            name,
                            [i[0] for i in items],
                            np.vstack([i[1] for i in items]),
                            [i[2] for i in items],
                        )
        progress("requantize", converted, total)
    with ctx.db.read() as s:
        remaining = s.execute(
            select(func.count()).select_from(Vector).where(Vector.dtype != to)
        ).scalar_one()
    refreshed: dict[str, int] | None = None
    if refresh and ctx.vectors is not None and remaining == len(failed):
        refreshed = refresh_chroma(ctx, progress=progress)
    return {
        "to": to,
        "converted": converted,
        "remaining": int(remaining),
        "failed": failed,
        "complete": remaining == 0,
        "before": before,
        "after": storage_stats(ctx),
        "chroma_refreshed": refreshed,
        "seconds": round(time.monotonic() - started, 2),
    }


def refresh_chroma(ctx: Any, *, chunk: int = 2000, progress: Progress = _noop) -> dict[str, int]:
    """Rewrite from SQLite every ChromaDB entry whose checksum or generation differs from
    its row, or that is missing; returns the number rewritten per collection."""
    out: dict[str, int] = {}
    with ctx.db.barrier():
        for name in (PAGES, PAPERS):
            have: dict[str, tuple[Any, Any]] = {}
            for ids, res in ctx.vectors.iter_entries(name, include=("metadatas",)):
                for i, meta in zip(ids, res["metadatas"], strict=False):
                    m = meta or {}
                    have[i] = (m.get("checksum"), m.get("generation"))
            with ctx.db.read() as s:
                want = s.execute(
                    select(Vector.chroma_id, Vector.checksum, Vector.generation)
                    .join(Paper, Paper.id == Vector.paper_id)
                    .where(Vector.kind == KIND_OF[name])
                ).all()
            stale = [cid for cid, chk, gen in want if have.get(cid) != (chk, gen)]
            progress(f"refresh {name}", 0, len(stale))
            for start in range(0, len(stale), chunk):
                with ctx.db.read() as s:
                    rows = s.execute(
                        select(Vector, Paper)
                        .join(Paper, Paper.id == Vector.paper_id)
                        .where(Vector.chroma_id.in_(stale[start : start + chunk]))
                    ).all()
                upsert_rows(ctx.vectors, name, rows)
                progress(f"refresh {name}", min(len(stale), start + chunk), len(stale))
            out[name] = len(stale)
    return out
