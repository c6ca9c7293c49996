"""The task queue: Huey, embedded on SQLite by default or on Redis for scale-out.

Our ``jobs`` table is the truth about a job; Huey only carries "run job X" messages.
At start the queue is flushed and every unfinished job is enqueued again, so a
job interrupted by a crash resumes (its steps are idempotent) and none runs twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from huey import Huey, MemoryHuey, PriorityRedisHuey, SqliteHuey
from huey.consumer import Consumer

from refserver.jobs.store import PRIORITIES, JobStore

log = logging.getLogger(__name__)


class _QuietConsumer(Consumer):
    """A consumer that runs inside our server: the server owns the signal handlers."""

    def _set_signal_handlers(self) -> None:  # uvicorn handles SIGINT/SIGTERM
        return None


def make_huey(backend: str, *, path: Path | None = None, redis_url: str | None = None) -> Huey:
    if backend == "redis":
        from redis import ConnectionPool

        return PriorityRedisHuey(
            "refserver", connection_pool=ConnectionPool.from_url(redis_url), results=False
        )
    if backend == "memory":
        return MemoryHuey("refserver", results=False)
    assert path is not None
    path.parent.mkdir(parents=True, exist_ok=True)
    return SqliteHuey("refserver", filename=str(path), results=False)


class JobQueue:
    """Runs job handlers by kind on Huey worker threads inside this process."""

    def __init__(self, huey: Huey, store: JobStore, workers: int = 2) -> None:
        self.huey = huey
        self.store = store
        self.workers = max(1, workers)
        self.handlers: dict[str, Callable[[str], None]] = {}
        self._consumer: Consumer | None = None

        @huey.task(name="run_job")
        def run_job(job_id: str) -> None:
            self._run(job_id)

        self._task = run_job

    def register(self, kind: str, handler: Callable[[str], None]) -> None:
        self.handlers[kind] = handler

    def enqueue(self, job_id: str, priority: str = "normal") -> None:
        self._task(job_id, priority=PRIORITIES.get(priority, 50))

    def _run(self, job_id: str) -> None:
        job = self.store.get(job_id)
        if job is None:
            return
        handler = self.handlers.get(job.kind)
        if handler is None:
            self.store.finish(job_id, "failed", error=f"no handler for job kind {job.kind!r}")
            return
        try:
            handler(job_id)
        except Exception as exc:  # the handler records its own failure; this is a backstop
            log.exception("job %s crashed", job_id)
            self.store.finish(job_id, "failed", error=f"internal error: {type(exc).__name__}")

    def recover(self) -> int:
        """Re-enqueue every unfinished job after a crash or restart."""
        self.huey.flush()
        jobs = self.store.unfinished()
        for job in jobs:
            if job.status == "processing":
                self.store.update(job.id, status="queued")
            self.enqueue(job.id, job.priority)
        if jobs:
            log.info("resuming %d unfinished job(s)", len(jobs))
        return len(jobs)

    def pending(self) -> int:
        return self.huey.pending_count()

    def start(self) -> None:
        if self._consumer is not None:
            return
        self._consumer = _QuietConsumer(
            self.huey,
            workers=self.workers,
            worker_type="thread",
            periodic=False,
            initial_delay=0.05,
            max_delay=0.5,
            backoff=1.15,
        )
        self._consumer.start()

    def stop(self, graceful: bool = True) -> None:
        if self._consumer is not None:
            self._consumer.stop(graceful=graceful)
            self._consumer = None

    @property
    def running(self) -> bool:
        return self._consumer is not None
