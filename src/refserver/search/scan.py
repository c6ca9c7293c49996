"""Many queries against the compact index in one pass over its codes.

faiss ``IndexScalarQuantizer`` answers a batch one query at a time: each query
reads every code (38 MB at 100k int8 pages), so 200 queries read them 200 times
and batching gains nothing (it is memory-bound). Here a batch reads the codes
once, in blocks of ``BLOCK_ROWS`` rows, and turns each block into one matrix
product (queries × block) that runs compute-bound in ONNX Runtime (already our
model runtime; its MLAS kernels are the fast CPU GEMMs, one thread):

- **int8** codes are multiplied as they are: faiss decodes code ``c`` of
  dimension ``d`` as ``vmin_d + (c + 0.5) / 255 · vdiff_d``, so ``q · x`` is a
  per-query constant plus ``Σ_d (q_d · vdiff_d / 255) · c_d``. Those weights are
  rounded to 7-bit integers and the block goes through ``MatMulInteger`` (uint8 ×
  int8 → exact int32, VNNI dot products: ~20 ms of CPU for 200 queries × 100k
  codes, where a float32 GEMM of the decoded codes takes ~150 ms). 7 bits, not 8:
  a pair of uint8 × int8 products then fits in int16, so CPUs without VNNI
  (``vpmaddubsw`` saturates) compute the same exact integers. The coarse top
  ``2n`` per query are re-scored with the float query on their decoded codes (the
  score faiss's single-query scan computes) and the top ``n`` kept: the same
  candidates as one query at a time, up to float rounding — unless the rounded
  weights push one of them below rank ``2n``, which the tests and the benchmark
  have not seen happen.
- **float16** codes are cast to float32 inside the graph and multiplied by the
  queries with ``Gemm`` (faiss's own scores up to summation order).

The top candidates per query are kept across blocks in faiss's heaps
(``float_minheap_array_t.addn``). Memory stays small: a block is 1.5 MiB of int8
codes (3 MiB float16, 6 MiB once cast) plus a few (queries × block) score
matrices (3 MiB each for 200 queries). One query is still cheaper through faiss's
fused scan: at 100k int8 pages (CPU ms, 200 candidates) 1 query 1.9 faiss vs 6.9
here, 4 queries 7.5 vs 8.1, 8 queries 15.0 vs 9.5 — hence ``MIN_BATCH``.
"""

from __future__ import annotations

import threading
from functools import lru_cache

import faiss
import numpy as np
import onnx
import onnx.helper as oh
import onnxruntime as ort

BLOCK_ROWS = 4096  # measured at 100k: 2k–4k rows fastest, 16k ~1.5× slower (int8)
MIN_BATCH = 8
WEIGHT_MAX = 63  # 7-bit query weights: exact on every x86 int8 kernel (see above)
COARSE = 2  # int8: coarse candidates per final candidate, re-scored in float
RESCORE_QUERIES = 16  # queries per re-scoring step (16 × 2n × d floats)


# --- the tiny ONNX graph (built with the ``onnx`` helpers) ---------------------------
def scan_model(dtype: str, dimension: int) -> bytes:
    """ModelProto: a block of codes and the queries in, scores (queries × rows) out."""
    T = onnx.TensorProto
    if dtype == "int8":
        nodes = [
            oh.make_node("MatMulInteger", ["codes", "weights"], ["dot"]),
            oh.make_node("Transpose", ["dot"], ["dot_t"], perm=[1, 0]),
            oh.make_node("Cast", ["dot_t"], ["scores"], to=T.FLOAT),
        ]
        inputs = [
            oh.make_tensor_value_info("codes", T.UINT8, ["rows", dimension]),
            oh.make_tensor_value_info("weights", T.INT8, [dimension, "queries"]),
        ]
    elif dtype == "float16":
        nodes = [
            oh.make_node("Cast", ["codes"], ["block"], to=T.FLOAT),
            oh.make_node("Gemm", ["weights", "block"], ["scores"], transB=1),
        ]
        inputs = [
            oh.make_tensor_value_info("codes", T.FLOAT16, ["rows", dimension]),
            oh.make_tensor_value_info("weights", T.FLOAT, ["queries", dimension]),
        ]
    else:
        raise ValueError(f"no batched scan for {dtype!r}")
    graph = oh.make_graph(
        nodes,
        f"scan_{dtype}",
        inputs,
        [oh.make_tensor_value_info("scores", T.FLOAT, ["queries", "rows"])],
    )
    model = oh.make_model(
        graph, producer_name="refserver", opset_imports=[oh.make_opsetid("", 13)], ir_version=8
    )
    onnx.checker.check_model(model)
    return model.SerializeToString()


_session_lock = threading.Lock()


@lru_cache(maxsize=4)
def _session(dtype: str, dimension: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    # One thread, like the faiss scan: on 2 shared cores extra threads spin
    # against the server's own work.
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(
        scan_model(dtype, dimension), sess_options=opts, providers=["CPUExecutionProvider"]
    )


def session(dtype: str, dimension: int) -> ort.InferenceSession:
    """The process-wide scan session (sessions are thread-safe to run)."""
    with _session_lock:
        return _session(dtype, dimension)


# --- faiss internals we rely on (checked by tests/search/test_batched_scan.py) -------
def codes_view(sq: faiss.IndexScalarQuantizer) -> np.ndarray:
    """The index's codes as a (ntotal, code_size) uint8 view (valid until it changes)."""
    n, size = int(sq.ntotal), int(sq.code_size)
    if n == 0:
        return np.zeros((0, size), dtype=np.uint8)
    return faiss.rev_swig_ptr(sq.codes.data(), n * size).reshape(n, size)


def int8_ranges(sq: faiss.IndexScalarQuantizer) -> tuple[np.ndarray, np.ndarray]:
    """(vmin, vdiff) per dimension of a trained QT_8bit quantizer."""
    trained = faiss.vector_to_array(sq.sq.trained).astype(np.float32)
    d = int(sq.d)
    if sq.sq.qtype != faiss.ScalarQuantizer.QT_8bit or len(trained) != 2 * d:
        raise ValueError("the int8 batched scan needs a trained per-dimension QT_8bit index")
    return trained[:d], trained[d:]


def _top_positions(
    dtype: str, dimension: int, codes: np.ndarray, weights: np.ndarray, n_queries: int, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """(row positions, scores) of the k best scores per query, best first (codes read once)."""
    sess = session(dtype, dimension)
    heap = faiss.ResultHeap(n_queries, k, keep_max=True)
    for start in range(0, len(codes), BLOCK_ROWS):
        block = codes[start : start + BLOCK_ROWS]
        if dtype == "float16":
            block = block.view(np.float16)
        scores = sess.run(None, {"codes": block, "weights": weights})[0]
        scores = np.ascontiguousarray(scores, dtype=np.float32)
        heap.heaps.addn(scores.shape[1], faiss.swig_ptr(scores), start)
    heap.finalize()
    return heap.I, heap.D


def _int8_weights(sq: faiss.IndexScalarQuantizer, queries: np.ndarray) -> np.ndarray:
    """Integer query weights (d × queries) whose products with the codes rank like q · x."""
    _, vdiff = int8_ranges(sq)
    w = queries * (vdiff / 255.0)[None, :]
    peak = np.abs(w).max(axis=1, keepdims=True)
    scale = np.where(peak > 0, peak / WEIGHT_MAX, 1.0)
    w8 = np.clip(np.rint(w / scale), -WEIGHT_MAX, WEIGHT_MAX).astype(np.int8)
    return np.ascontiguousarray(w8.T)


def _rescore(
    sq: faiss.IndexScalarQuantizer, codes: np.ndarray, queries: np.ndarray, pos: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Of ``pos`` per query, the k best by the float query on the decoded codes (and scores)."""
    out = np.empty((len(queries), k), dtype=np.int64)
    out_scores = np.empty((len(queries), k), dtype=np.float32)
    d = int(sq.d)
    for i in range(0, len(queries), RESCORE_QUERIES):
        p = pos[i : i + RESCORE_QUERIES]
        valid = p >= 0
        decoded = sq.sa_decode(codes[np.where(valid, p, 0).ravel()]).reshape(*p.shape, d)
        scores = np.einsum("qwd,qd->qw", decoded, queries[i : i + RESCORE_QUERIES])
        scores[~valid] = -np.inf
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        best = np.take_along_axis(p, order, axis=1)
        best[np.take_along_axis(~valid, order, axis=1)] = -1
        out[i : i + len(p)] = best
        out_scores[i : i + len(p)] = np.take_along_axis(scores, order, axis=1)
    return out, out_scores


def scan_topk(sq: faiss.IndexScalarQuantizer, queries: np.ndarray, k: int) -> np.ndarray:
    """Positions (rows of ``sq``) of each query's k best codes by inner product.

    The same candidates ``sq.search(queries, k)`` finds, best first, with the codes
    read once for the whole batch. Rows beyond ``ntotal`` come back as -1.
    """
    return scan_topk_scores(sq, queries, k)[0]


def scan_topk_scores(
    sq: faiss.IndexScalarQuantizer, queries: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """``scan_topk`` with each candidate's score on its decoded code (-inf for -1 rows)."""
    q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
    codes = codes_view(sq)
    out = np.full((len(q), max(k, 0)), -1, dtype=np.int64)
    scores = np.full((len(q), max(k, 0)), -np.inf, dtype=np.float32)
    kk = min(k, len(codes))
    if kk <= 0 or len(q) == 0:
        return out, scores
    d = int(sq.d)
    if sq.sq.qtype == faiss.ScalarQuantizer.QT_8bit:
        wide = min(len(codes), COARSE * kk)
        coarse, _ = _top_positions("int8", d, codes, _int8_weights(sq, q), len(q), wide)
        out[:, :kk], scores[:, :kk] = _rescore(sq, codes, q, coarse, kk)
    elif sq.sq.qtype == faiss.ScalarQuantizer.QT_fp16:
        out[:, :kk], scores[:, :kk] = _top_positions("float16", d, codes, q, len(q), kk)
    else:
        raise ValueError("batched scan supports QT_8bit and QT_fp16 indexes")
    scores[out < 0] = -np.inf
    return out, scores
