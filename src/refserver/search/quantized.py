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

Only candidates that can still reach a query's top k are read from SQLite: the
index keeps, per vector, the norm of its quantization error ``e = |x - x̂|``, so
the exact score ``q·x`` lies within ``|q|·e`` (plus float rounding, ``SCORE_SLACK``)
of the code's score ``q·x̂``. A candidate whose upper bound is below the k-th best
lower bound cannot be in the top k and is not read; the answer is the same as
re-ranking every candidate (measured: int8 reads 40–75% of them, float16 ~25%).
"""

from __future__ import annotations

import json
import threading
from typing import Literal

import faiss
import numpy as np
from sqlalchemy import select

from refserver.embedding.model import decode_vectors
from refserver.search.scan import MIN_BATCH, scan_topk_scores
from refserver.storage.db import Database
from refserver.storage.models import Vector

Dtype = Literal["int8", "float16"]
_QTYPES = {"int8": faiss.ScalarQuantizer.QT_8bit, "float16": faiss.ScalarQuantizer.QT_fp16}
LOAD_CHUNK = 5000
_READ_CANDIDATES = (
    "SELECT v.id, v.vector, v.dtype, p.doc_id, v.page_number FROM vectors v "
    "JOIN papers p ON p.id = v.paper_id WHERE v.id IN (SELECT value FROM json_each(?)) "
    "ORDER BY v.id"
)
# Float rounding between the code scores (faiss or the batched scan) and the exact
# float32 re-rank scores: a 384-term dot product of unit vectors is off by < 3e-5.
SCORE_SLACK = 1e-4
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
        self._err = np.zeros(0, dtype=np.float32)  # |x - x̂| per id of ``_ids``
        self.index = self._new_index()

    def _new_index(self) -> faiss.IndexIDMap:
        sq = faiss.IndexScalarQuantizer(
            self.dimension, _QTYPES[self.dtype], faiss.METRIC_INNER_PRODUCT
        )
        return faiss.IndexIDMap(sq)

    # --- keeping up with SQLite ------------------------------------------------
    def sync(self) -> int:
        """Bring the index to the library's current generation; returns its size.

        Rows rewritten in place since the last sync (``requantize``, ``check --fix``
        give them the new generation) are encoded again, so every code and its
        error norm describe the vector SQLite holds now.
        """
        gen = self.db.generation()
        with self._lock:
            if gen == self._generation:
                return int(self.index.ntotal)
            with self.db.read() as s:
                rows = s.execute(
                    select(Vector.id, Vector.generation)
                    .where(Vector.kind == self.kind, Vector.dimension == self.dimension)
                    .order_by(Vector.id)
                ).all()
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            gens = np.fromiter((r[1] or 0 for r in rows), dtype=np.int64, count=len(rows))
            if len(ids) >= 2 * max(self._trained_on, 128) or len(ids) < self._trained_on // 2:
                self._rebuild(ids)
            else:
                changed = ids[(gens > self._generation) & np.isin(ids, self._ids)]
                gone = np.union1d(np.setdiff1d(self._ids, ids, assume_unique=True), changed)
                if len(gone):
                    self.index.remove_ids(faiss.IDSelectorBatch(gone))
                new = np.union1d(np.setdiff1d(ids, self._ids, assume_unique=True), changed)
                keep = ~np.isin(self._ids, gone)
                known_ids, known_err = self._ids[keep], self._err[keep]
                if len(new) and not self.index.is_trained:
                    self._rebuild(ids)
                else:
                    add_ids, add_err = [known_ids], [known_err]
                    for vids, mat in self._load(new):
                        self.index.add_with_ids(mat, vids)
                        add_ids.append(vids)
                        add_err.append(self._errors(self.index, mat))
                    all_ids = np.concatenate(add_ids)
                    order = np.argsort(all_ids, kind="stable")
                    self._ids, self._err = all_ids[order], np.concatenate(add_err)[order]
                    if not np.array_equal(self._ids, ids):  # a row vanished mid-load
                        self._rebuild(ids)
            self._generation = gen
            return int(self.index.ntotal)

    @staticmethod
    def _errors(index: faiss.IndexIDMap, mat: np.ndarray) -> np.ndarray:
        """|x - x̂| per row: how far each code's score can be from the exact one (|q| = 1)."""
        sq = faiss.downcast_index(index.index)
        return np.linalg.norm(mat - sq.sa_decode(sq.sa_encode(mat)), axis=1).astype(np.float32)

    def _rebuild(self, ids: np.ndarray) -> None:
        index = self._new_index()
        mats: list[np.ndarray] = []
        order: list[np.ndarray] = []
        for vids, mat in self._load(ids):
            mats.append(mat)
            order.append(vids)
        err = np.zeros(0, dtype=np.float32)
        if mats:
            data = np.vstack(mats)
            vids = np.concatenate(order)
            index.train(data)
            index.add_with_ids(data, vids)
            err = self._errors(index, data)[np.argsort(vids, kind="stable")]
            ids = np.sort(vids)
        self.index = index
        self._trained_on = len(ids)
        self._ids = ids
        self._err = err

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
        """Per query: [(doc_id, page, cosine)] best first, re-ranked exactly.

        Of the ``rerank`` × k candidates by code score, only those whose exact score
        can still reach the top k are read from SQLite (see the module docstring);
        the order is the exact scores', ties in candidate order, as if all were read.
        """
        self.sync()
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        with self._lock:
            if self.index.ntotal == 0:
                return [[] for _ in range(len(q))]
            n_cand = min(int(self.index.ntotal), max(k, k * rerank))
            cand, code_scores = self._candidates(q, n_cand)
            pos = np.minimum(np.searchsorted(self._ids, cand), max(len(self._ids) - 1, 0))
            err = self._err[pos] if len(self._err) else np.zeros(cand.shape, np.float32)
        valid = cand >= 0
        need = valid
        if n_cand > k:
            slack = np.linalg.norm(q, axis=1)[:, None] * err + SCORE_SLACK
            low = np.where(valid, code_scores - slack, -np.inf)
            kth = -np.partition(-low, k - 1, axis=1)[:, k - 1 : k]  # k-th best lower bound
            need = valid & (code_scores + slack >= kth)
        found, mat, where = self._read_vectors(np.unique(cand[need]))
        known = self._known(found, cand)
        if (need & ~known).any():
            # A candidate the bound relied on left SQLite: re-rank every candidate.
            more = self._read_vectors(np.unique(cand[valid & ~need]))
            found, mat, where = self._merge((found, mat, where), more)
            known, need = self._known(found, cand), valid
        rows = np.minimum(np.searchsorted(found, cand), max(len(found) - 1, 0))
        use = known & need
        out: list[list[tuple[str, int, float]]] = []
        for qi in range(len(q)):
            r = rows[qi][use[qi]]  # candidates read and still in SQLite, in candidate order
            # einsum, not ``mat[r] @ q``: BLAS's gemv rounds a row differently depending
            # on which other rows are in the matrix, so the same candidate could score
            # 1 ulp apart in a batch and alone (and swap places on a tie).
            scores = np.einsum("ij,j->i", mat[r], q[qi])
            order = np.argsort(-scores, kind="stable")[:k]
            out.append([(*where[r[j]], float(scores[j])) for j in order])
        return out

    @staticmethod
    def _known(found: np.ndarray, cand: np.ndarray) -> np.ndarray:
        """Which candidates are among the (sorted) ids read from SQLite."""
        if not len(found):
            return np.zeros(cand.shape, dtype=bool)
        rows = np.minimum(np.searchsorted(found, cand), len(found) - 1)
        return (cand >= 0) & (found[rows] == cand)

    @staticmethod
    def _merge(
        a: tuple[np.ndarray, np.ndarray, list[tuple[str, int]]],
        b: tuple[np.ndarray, np.ndarray, list[tuple[str, int]]],
    ) -> tuple[np.ndarray, np.ndarray, list[tuple[str, int]]]:
        ids = np.concatenate([a[0], b[0]])
        order = np.argsort(ids, kind="stable")
        where = a[2] + b[2]
        return ids[order], np.vstack([a[1], b[1]])[order], [where[i] for i in order]

    def _read_vectors(
        self, ids: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, list[tuple[str, int]]]:
        """(sorted ids found, their stored vectors as rows, (doc_id, page) per row).

        The one read of stored vectors for re-ranking: every candidate of every
        query in one statement (how a blob decodes is decided here only), through
        the driver's cursor (SQLAlchemy's row objects cost ~20% of the read).
        """
        if not len(ids):
            return np.zeros(0, np.int64), np.zeros((0, self.dimension), np.float32), []
        with self.db.read() as s:  # one statement: rowid look-ups of a JSON id list
            cur = s.connection().connection.cursor()
            try:
                got = cur.execute(_READ_CANDIDATES, (json.dumps(ids.tolist()),)).fetchall()
            finally:
                cur.close()
        found = np.fromiter((r[0] for r in got), dtype=np.int64, count=len(got))
        mat = decode_vectors([r[1] for r in got], [r[2] for r in got], self.dimension)
        return found, mat, [(r[3], r[4]) for r in got]

    def _candidates(self, q: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(vector ids, code scores) of each query's n best codes (-1 pads); hold ``_lock``.

        One query: faiss's fused scan. A batch: the codes read once for all queries
        (``scan.scan_topk``), the same candidates up to float rounding.
        """
        if len(q) < MIN_BATCH:
            scores, ids = self.index.search(q, n)
            return ids, np.where(ids >= 0, scores, -np.inf).astype(np.float32)
        pos, scores = scan_topk_scores(faiss.downcast_index(self.index.index), q, n)
        ids = faiss.rev_swig_ptr(self.index.id_map.data(), int(self.index.ntotal))
        return np.where(pos >= 0, ids[np.maximum(pos, 0)], -1), scores

    def candidates(self, queries: np.ndarray, n: int) -> np.ndarray:
        """Ids of each query's n best candidates by quantized score (before re-ranking)."""
        self.sync()
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        with self._lock:
            if self.index.ntotal == 0:
                return np.full((len(q), n), -1, dtype=np.int64)
            return self._candidates(q, min(n, int(self.index.ntotal)))[0]

    # --- cost ----------------------------------------------------------------------
    def memory_bytes(self) -> int:
        """Bytes the index holds: codes, one int64 id and one float32 error norm per vector."""
        with self._lock:
            n = int(self.index.ntotal)
            code = int(faiss.downcast_index(self.index.index).code_size)
            return n * (code + 8 + 4)

    def bytes_per_vector(self) -> float:
        n = int(self.index.ntotal)
        return self.memory_bytes() / n if n else 0.0
