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

A batch of queries (``scan.MIN_BATCH`` or more) reads the codes once for all of
them in blocks of matrix products (``scan.scan_topk``) instead of once per query,
and the candidates of all queries are re-ranked from one SQLite read.
"""

from __future__ import annotations

import json
import threading
from typing import Literal

import faiss
import numpy as np
from sqlalchemy import select, text

from refserver.embedding.model import decode_vectors
from refserver.search.scan import MIN_BATCH, scan_topk
from refserver.storage.db import Database
from refserver.storage.models import Vector

Dtype = Literal["int8", "float16"]
_QTYPES = {"int8": faiss.ScalarQuantizer.QT_8bit, "float16": faiss.ScalarQuantizer.QT_fp16}
LOAD_CHUNK = 5000
_READ_CANDIDATES = text(
    "SELECT v.id, v.vector, v.dtype, p.doc_id, v.page_number FROM vectors v "
    "JOIN papers p ON p.id = v.paper_id WHERE v.id IN (SELECT value FROM json_each(:ids))"
)
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
            cand = self._candidates(q, n_cand)
        found, mat, where = self._read_vectors(np.unique(cand[cand >= 0]))
        rows = np.minimum(np.searchsorted(found, cand), max(len(found) - 1, 0))
        known = (cand >= 0) & (found[rows] == cand) if len(found) else np.zeros_like(cand, bool)
        out: list[list[tuple[str, int, float]]] = []
        for qi in range(len(q)):
            r = rows[qi][known[qi]]  # candidates SQLite still holds, in candidate order
            scores = mat[r] @ q[qi]
            order = np.argsort(-scores, kind="stable")[:k]
            out.append([(*where[r[j]], float(scores[j])) for j in order])
        return out

    def _read_vectors(
        self, ids: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, list[tuple[str, int]]]:
        """(sorted ids found, their stored vectors as rows, (doc_id, page) per row).

        The one read of stored vectors for re-ranking: every candidate of every
        query in one statement (how a blob decodes is decided here only).
        """
        with self.db.read() as s:  # one statement: rowid look-ups of a JSON id list
            got = s.connection().execute(_READ_CANDIDATES, {"ids": json.dumps(ids.tolist())}).all()
        got.sort(key=lambda r: r[0])
        found = np.array([r[0] for r in got], dtype=np.int64)
        mat = decode_vectors([r[1] for r in got], [r[2] for r in got], self.dimension)
        return found, mat, [(r[3], r[4]) for r in got]

    def _candidates(self, q: np.ndarray, n: int) -> np.ndarray:
        """Vector ids of each query's n best codes (-1 pads); hold ``_lock``.

        One query: faiss's fused scan. A batch: the codes read once for all queries
        (``scan.scan_topk``), the same candidates up to float rounding.
        """
        if len(q) < MIN_BATCH:
            return self.index.search(q, n)[1]
        pos = scan_topk(faiss.downcast_index(self.index.index), q, n)
        ids = faiss.rev_swig_ptr(self.index.id_map.data(), int(self.index.ntotal))
        return np.where(pos >= 0, ids[np.maximum(pos, 0)], -1)

    def candidates(self, queries: np.ndarray, n: int) -> np.ndarray:
        """Ids of each query's n best candidates by quantized score (before re-ranking)."""
        self.sync()
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        with self._lock:
            if self.index.ntotal == 0:
                return np.full((len(q), n), -1, dtype=np.int64)
            return self._candidates(q, min(n, int(self.index.ntotal)))

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
