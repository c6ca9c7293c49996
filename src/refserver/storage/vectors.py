"""The vector index in ChromaDB: rebuildable from SQLite, owned by one process.

Two collections in cosine space: ``pages`` (one vector per page, id
``<doc_id>:<page>``) and ``papers`` (one per paper, id ``<doc_id>``). Metadata
carries only what filtering and the consistency checker need: doc id, page,
title, year, the generation the entry was written at and the SHA-256 of the
float32 vector (DESIGN.md §1, §3, §4).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

PAGES = "pages"
PAPERS = "papers"
COLLECTIONS = (PAGES, PAPERS)
MAX_BATCH = 4000


def page_vector_id(doc_id: str, page: int) -> str:
    return f"{doc_id}:{page}"


class ChromaBusy(RuntimeError):
    """Another process owns the embedded ChromaDB folder."""


class OwnerLock:
    """An exclusive flock on ``<chroma>.owner.lock``; the kernel frees it if we die."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ChromaBusy(
                f"another RefServer process owns {self.path.with_suffix('')}: stop it "
                "(or send the work to it over HTTP) before running this command"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class VectorIndex:
    """ChromaDB behind one small interface, embedded or a Chroma server."""

    def __init__(
        self,
        path: Path | None = None,
        *,
        host: str | None = None,
        port: int = 8000,
        hnsw: dict[str, Any] | None = None,
        own: bool = True,
    ) -> None:
        import chromadb
        from chromadb.config import Settings as ChromaSettings

        self.path = path
        self.hnsw = {
            "space": "cosine",
            "ef_construction": 200,
            "max_neighbors": 32,
            "ef_search": 200,
        }
        self.hnsw.update(hnsw or {})
        self._lock = (
            OwnerLock(Path(str(path) + ".owner.lock")) if (path and own and not host) else None
        )
        if self._lock:
            self._lock.acquire()
        chroma_settings = ChromaSettings(anonymized_telemetry=False, allow_reset=True)
        if host:
            self.client = chromadb.HttpClient(host=host, port=port, settings=chroma_settings)
        else:
            assert path is not None
            path.mkdir(parents=True, exist_ok=True)
            self.client = chromadb.PersistentClient(path=str(path), settings=chroma_settings)
        self._collections: dict[str, Any] = {}
        self._mutex = threading.RLock()

    # --- collections ---------------------------------------------------------
    def collection(self, name: str) -> Any:
        with self._mutex:
            col = self._collections.get(name)
            if col is None:
                col = self.client.get_or_create_collection(
                    name, embedding_function=None, configuration={"hnsw": dict(self.hnsw)}
                )
                self._collections[name] = col
            return col

    def reset_collection(self, name: str, hnsw: dict[str, Any] | None = None) -> None:
        """Drop and recreate ``name`` (e.g. with new HNSW parameters); rebuild follows."""
        with self._mutex:
            if hnsw:
                self.hnsw.update(hnsw)
            with contextlib.suppress(Exception):  # absent already
                self.client.delete_collection(name)
            self._collections.pop(name, None)
            self.collection(name)

    def configuration(self, name: str) -> dict[str, Any]:
        col = self.collection(name)
        conf = getattr(col, "configuration_json", None) or {}
        return dict(conf.get("hnsw") or self.hnsw)

    # --- writes ----------------------------------------------------------------
    def upsert(
        self,
        name: str,
        ids: Sequence[str],
        embeddings: np.ndarray | Sequence[Sequence[float]],
        metadatas: Sequence[dict[str, Any]],
    ) -> None:
        col = self.collection(name)
        emb = np.asarray(embeddings, dtype=np.float32)
        for i in range(0, len(ids), MAX_BATCH):
            col.upsert(
                ids=list(ids[i : i + MAX_BATCH]),
                embeddings=emb[i : i + MAX_BATCH],
                metadatas=[_clean_meta(m) for m in metadatas[i : i + MAX_BATCH]],
            )

    def delete(
        self, name: str, ids: Sequence[str] | None = None, where: dict | None = None
    ) -> None:
        col = self.collection(name)
        if ids is not None:
            for i in range(0, len(ids), MAX_BATCH):
                chunk = list(ids[i : i + MAX_BATCH])
                if chunk:
                    col.delete(ids=chunk)
        elif where is not None:
            col.delete(where=where)

    def delete_paper(self, doc_id: str) -> None:
        self.delete(PAGES, where={"doc_id": doc_id})
        self.delete(PAPERS, ids=[doc_id])

    # --- reads -----------------------------------------------------------------
    def count(self, name: str) -> int:
        return int(self.collection(name).count())

    def query(
        self,
        name: str,
        embeddings: np.ndarray,
        n_results: int,
        where: dict | None = None,
    ) -> dict[str, Any]:
        col = self.collection(name)
        n = max(1, n_results)  # Chroma 1.x caps n_results at the collection size itself
        emb = np.asarray(embeddings, dtype=np.float32)
        if emb.ndim == 1:
            emb = emb[None, :]
        return col.query(
            query_embeddings=emb,
            n_results=n,
            where=where,
            include=["metadatas", "distances"],
        )

    def get(self, name: str, ids: Sequence[str], include: Sequence[str] = ("metadatas",)) -> dict:
        return self.collection(name).get(ids=list(ids), include=list(include))

    def iter_entries(
        self, name: str, include: Sequence[str] = ("metadatas",), page_size: int = 5000
    ) -> Iterator[tuple[list[str], dict[str, Any]]]:
        """Page through every entry: yields (ids, result) per page."""
        col = self.collection(name)
        offset = 0
        while True:
            res = col.get(include=list(include), limit=page_size, offset=offset)
            ids = res["ids"]
            if not ids:
                return
            yield ids, res
            offset += len(ids)
            if len(ids) < page_size:
                return

    def close(self) -> None:
        with self._mutex:
            self._collections.clear()
            try:
                self.client.close()
            except Exception:
                log.debug("chroma close failed", exc_info=True)
        if self._lock:
            self._lock.release()


def _clean_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """Chroma metadata accepts str/int/float/bool only; drop None values."""
    return {
        k: v for k, v in meta.items() if v is not None and isinstance(v, str | int | float | bool)
    }
