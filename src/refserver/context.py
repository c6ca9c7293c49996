"""The running RefServer: stores, pipeline, queue and scheduler wired together.

One object per process. ``open_context`` is used by the server and by CLI
commands alike, so both take the same code paths. Opening the embedded ChromaDB
takes the owner lock (DESIGN.md §4).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from refserver import __version__
from refserver.auth.users import Accounts
from refserver.config import Settings
from refserver.jobs.queue import JobQueue, make_huey
from refserver.jobs.store import JobStore
from refserver.storage.db import Database
from refserver.storage.files import FileStore
from refserver.storage.library import Library
from refserver.storage.vectors import VectorIndex

log = logging.getLogger(__name__)


class AppContext:
    def __init__(self, settings: Settings, *, with_vectors: bool = True) -> None:
        settings.ensure_dirs()
        self.settings = settings
        self.started_at = time.time()
        self.version = __version__
        self.db = Database(str(settings.database_url))
        self.db.migrate()
        self.files = FileStore(settings.files_dir)
        self.vectors: VectorIndex | None = None
        if with_vectors:
            self.vectors = VectorIndex(
                settings.chroma_path,
                host=settings.chroma_host,
                port=settings.chroma_port,
                hnsw={
                    "ef_construction": settings.hnsw_ef_construction,
                    "max_neighbors": settings.hnsw_max_neighbors,
                    "ef_search": settings.hnsw_ef_search,
                },
            )
        self.library = Library(
            self.db, self.files, self.vectors, vector_storage=settings.vector_storage
        )
        self.jobs = JobStore(self.db)
        self.accounts = Accounts(self.db)
        self._embedder_lock = threading.Lock()
        self._embedder: Any = None
        from refserver.ingest.pipeline import IngestPipeline

        self.pipeline = IngestPipeline(settings, self.library, self.jobs, self.embedder)
        self.queue = JobQueue(
            make_huey(
                settings.queue_backend, path=settings.queue_path, redis_url=settings.redis_url
            ),
            self.jobs,
            workers=settings.workers,
        )
        self.queue.register("ingest", self.pipeline.run_job)
        self.scheduler: Any = None
        self.extras: dict[str, Any] = {}

    def embedder(self) -> Any:
        """The embedding model, loaded on first use (it costs ~0.3 s and 100 MB)."""
        if self._embedder is None:
            with self._embedder_lock:
                if self._embedder is None:
                    from refserver.embedding.model import get_embedder

                    self._embedder = get_embedder(
                        self.settings.embedding_threads, self.settings.embedding_batch_size
                    )
        return self._embedder

    def audit(
        self,
        action: str,
        *,
        username: str | None,
        target: str | None = None,
        detail: dict[str, Any] | None = None,
        client: str | None = None,
    ) -> None:
        """Record who did what (DESIGN.md §1: the audit log is part of the truth)."""
        self.accounts.audit(action, username=username, target=target, detail=detail, client=client)

    @property
    def deployment_mode(self) -> str:
        if (
            self.settings.chroma_host
            or not self.db.is_sqlite
            or self.settings.queue_backend == "redis"
        ):
            return "scale-out"
        return "embedded"

    def start_workers(self) -> None:
        self.queue.recover()
        self.queue.start()

    def close(self) -> None:
        # Background services registered by areas (e.g. the consume-folder watcher)
        # stop before the stores they use.
        for name, service in list(self.extras.items()):
            stop = getattr(service, "stop", None)
            if callable(stop):
                try:
                    stop()
                except Exception:
                    log.exception("stopping %s failed", name)
        if self.scheduler is not None:
            try:
                self.scheduler.shutdown()
            except Exception:
                log.debug("scheduler shutdown failed", exc_info=True)
        self.queue.stop(graceful=True)
        if self.vectors is not None:
            self.vectors.close()
        self.db.dispose()


def open_context(settings: Settings, *, with_vectors: bool = True) -> AppContext:
    return AppContext(settings, with_vectors=with_vectors)


def data_dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
