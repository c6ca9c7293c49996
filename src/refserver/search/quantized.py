"""A compact in-memory vector index (int8 or float16) with exact re-ranking.

The index keeps one scalar-quantized code per page (faiss
``IndexScalarQuantizer``: 384 bytes per vector as int8, 768 as float16, against
1,536 for float32 plus HNSW links in ChromaDB) and scans it exhaustively, which
is only a few milliseconds at 100k pages. The top ``rerank`` × k candidates are
then re-scored exactly with the vectors read from SQLite (the truth), so
quantization error only decides which candidates are looked at, not their order.
SQLite rows are decoded by their own ``dtype`` (``vector_storage``): with int8 or
float16 storage the re-ranking uses those decoded vectors (cosine >= 0.9999 to the
float32 originals, see docs/benchmarks.md for the recall).

The index follows SQLite: ``sync()`` adds new vector rows and drops deleted
ones when the library generation moved; it is rebuilt (re-trained) when the
collection has doubled since training, so the int8 value ranges stay right.
"""

from __future__ import annotations

import threading
from typing import Literal

import faiss
import numpy as np
from sqlalchemy import select

from refserver.embedding.model import decode_vector, decode_vectors
from refserver.storage.db import Database
from refserver.storage.models import Paper, Vector

Dtype = Literal["int8", "float16"]
_QTYPES = {"int8": faiss.ScalarQuantizer.QT_8bit, "float16": faiss.ScalarQuantizer.QT_fp16}
LOAD_CHUNK = 5000
# One scanning thread: on a small shared machine OpenMP threads spin against the
# server's own threads (measured: p50 3.5 ms with 1 thread, 47 ms with 2 under load).
faiss.omp_set_num_threads(1)


class QuantizedIndex:
    """Exhaustive search over quantized codes, re-ranked with float32 from SQLite."""

    def __init__(
        self, db: Database, dtype: Dtype = "int8", kind: str = "page", dimension: int = 384
    ) -> None:
        if dtype not in _QTYPES:
            raise ValueError(f"unknown quantization {dtype!r}; use int8 or float16")
        self.db = db
        self.dtype = dtype
        self.kind = kind
        self.dimension = dimension
        self._lock = threading.RLock()
        self._generation = -1
        self._trained_on = 0
        self._ids = np.zeros(0, dtype=np.int64)
        self.index = self._new_index()

    def _new_index(self) -> faiss.IndexIDMap:
        sq = faiss.IndexScalarQuantizer(
            self.dimension, _QTYPES[self.dtype], faiss.METRIC_INNER_PRODUCT
        )
        return faiss.IndexIDMap(sq)

    # --- keeping up with SQLite ------------------------------------------------
    def sync(self) -> int:
        """Bring the index to the library's current generation; returns its size."""
        gen = self.db.generation()
        with self._lock:
            if gen == self._generation:
                return int(self.index.ntotal)
            with self.db.read() as s:
                ids = np.fromiter(
                    s.execute(
                        select(Vector.id)
                        .where(Vector.kind == self.kind, Vector.dimension == self.dimension)
                        .order_by(Vector.id)
                    ).scalars(),
                    dtype=np.int64,
                )
            if len(ids) >= 2 * max(self._trained_on, 128) or len(ids) < self._trained_on // 2:
                self._rebuild(ids)
            else:
                gone = np.setdiff1d(self._ids, ids, assume_unique=True)
                if len(gone):
                    self.index.remove_ids(faiss.IDSelectorBatch(gone))
                new = np.setdiff1d(ids, self._ids, assume_unique=True)
                if len(new):
                    if not self.index.is_trained:
                        self._rebuild(ids)
                    else:
                        for vids, mat in self._load(new):
                            self.index.add_with_ids(mat, vids)
            self._ids = ids
            self._generation = gen
            return int(self.index.ntotal)

    def _rebuild(self, ids: np.ndarray) -> None:
        index = self._new_index()
        mats: list[np.ndarray] = []
        order: list[np.ndarray] = []
        for vids, mat in self._load(ids):
            mats.append(mat)
            order.append(vids)
        if mats:
            data = np.vstack(mats)
            index.train(data)
            index.add_with_ids(data, np.concatenate(order))
        self.index = index
        self._trained_on = len(ids)

    def _load(self, ids: np.ndarray):  # noqa: ANN202 - generator of (ids, matrix)
        for i in range(0, len(ids), LOAD_CHUNK):
            chunk = [int(x) for x in ids[i : i + LOAD_CHUNK]]
            with self.db.read() as s:
                rows = s.execute(
                    select(Vector.id, Vector.vector, Vector.dtype).where(Vector.id.in_(chunk))
                ).all()
            if rows:
                vids = np.array([r[0] for r in rows], dtype=np.int64)
                mat = decode_vectors([r[1] for r in rows], [r[2] for r in rows], self.dimension)
                yield vids, np.ascontiguousarray(mat, dtype=np.float32)

    # --- queries -----------------------------------------------------------------
    def search(
        self, queries: np.ndarray, k: int, *, rerank: int = 4
    ) -> list[list[tuple[str, int, float]]]:
        """Per query: [(doc_id, page, cosine)] best first, re-ranked exactly."""
        self.sync()
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        with self._lock:
            if self.index.ntotal == 0:
                return [[] for _ in range(len(q))]
            n_cand = min(int(self.index.ntotal), max(k, k * rerank))
            _, cand = self.index.search(q, n_cand)
        wanted = sorted({int(x) for x in cand.ravel() if x >= 0})
        vecs: dict[int, tuple[np.ndarray, str, int]] = {}
        with self.db.read() as s:
            for i in range(0, len(wanted), 900):
                rows = s.execute(
                    select(Vector.id, Vector.vector, Vector.dtype, Paper.doc_id, Vector.page_number)
                    .join(Paper, Paper.id == Vector.paper_id)
                    .where(Vector.id.in_(wanted[i : i + 900]))
                ).all()
                for vid, blob, dtype, doc_id, page in rows:
                    vecs[vid] = (decode_vector(blob, dtype, self.dimension), doc_id, page)
        out: list[list[tuple[str, int, float]]] = []
        for qi in range(len(q)):
            ids = [int(x) for x in cand[qi] if x >= 0 and int(x) in vecs]
            if not ids:
                out.append([])
                continue
            mat = np.vstack([vecs[i][0] for i in ids])
            scores = mat @ q[qi]
            order = np.argsort(-scores, kind="stable")[:k]
            out.append([(vecs[ids[j]][1], vecs[ids[j]][2], float(scores[j])) for j in order])
        return out

    # --- cost ----------------------------------------------------------------------
    def memory_bytes(self) -> int:
        """Bytes the index holds: codes plus one int64 id per vector."""
        with self._lock:
            n = int(self.index.ntotal)
            code = int(faiss.downcast_index(self.index.index).code_size)
            return n * (code + 8)

    def bytes_per_vector(self) -> float:
        n = int(self.index.ntotal)
        return self.memory_bytes() / n if n else 0.0
