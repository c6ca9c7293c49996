"""Job records in SQLite: the state the API, CLI and UI all show."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select

from refserver.storage.db import Database
from refserver.storage.models import Job

PRIORITIES = {"urgent": 100, "high": 75, "normal": 50, "low": 25}
ACTIVE = ("queued", "processing")
FINISHED = ("completed", "failed", "cancelled")


class JobCancelled(Exception):
    """Raised inside a job when a cancel was requested."""


def now() -> datetime:
    return datetime.now(UTC)


class JobStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(
        self,
        *,
        kind: str = "ingest",
        filename: str = "",
        priority: str = "normal",
        params: dict[str, Any] | None = None,
        staged_path: str | None = None,
        file_sha256: str | None = None,
        batch_id: str | None = None,
        created_by: str | None = None,
        status: str = "queued",
        job_id: str | None = None,
    ) -> str:
        if priority not in PRIORITIES:
            raise ValueError(f"priority must be one of {', '.join(PRIORITIES)}")
        job_id = job_id or str(uuid.uuid4())
        with self.db.write(bump=False) as s:
            s.add(
                Job(
                    id=job_id,
                    kind=kind,
                    filename=filename,
                    priority=priority,
                    params=params or {},
                    staged_path=staged_path,
                    file_sha256=file_sha256,
                    batch_id=batch_id,
                    created_by=created_by,
                    status=status,
                )
            )
        return job_id

    def get(self, job_id: str) -> Job | None:
        with self.db.read() as s:
            return s.get(Job, job_id)

    def update(self, job_id: str, **fields: Any) -> Job | None:
        with self.db.write(bump=False) as s:
            job = s.get(Job, job_id)
            if job is None:
                return None
            for k, v in fields.items():
                setattr(job, k, v)
            return job

    def step_started(self, job_id: str, step: str, progress: float) -> None:
        self.update(job_id, current_step=step, progress=progress)

    def step_done(self, job_id: str, step: str, progress: float, result: Any = None) -> None:
        with self.db.write(bump=False) as s:
            job = s.get(Job, job_id)
            if job is None:
                return
            if step not in job.steps_completed:
                job.steps_completed = [*job.steps_completed, step]
            if result is not None:
                job.step_results = {**job.step_results, step: result}
            job.progress = progress

    def step_failed(self, job_id: str, step: str, error: str) -> None:
        with self.db.write(bump=False) as s:
            job = s.get(Job, job_id)
            if job is None:
                return
            job.steps_failed = [*job.steps_failed, {"step": step, "error": error}]
            job.step_results = {**job.step_results, step: {"error": error}}

    def start(self, job_id: str) -> Job | None:
        """Mark processing; returns None if the job is gone, finished or cancelled."""
        with self.db.write(bump=False) as s:
            job = s.get(Job, job_id)
            if job is None or job.status in FINISHED:
                return None
            if job.cancel_requested:
                job.status = "cancelled"
                job.finished_at = now()
                return None
            job.status = "processing"
            job.attempts += 1
            job.started_at = job.started_at or now()
            return job

    def finish(
        self,
        job_id: str,
        status: str,
        *,
        error: str | None = None,
        summary: dict[str, Any] | None = None,
        paper_id: str | None = None,
    ) -> None:
        fields: dict[str, Any] = {"status": status, "finished_at": now(), "error_message": error}
        if status == "completed":
            fields["progress"] = 100.0
            fields["current_step"] = "done"
        if summary is not None:
            fields["result_summary"] = summary
        if paper_id is not None:
            fields["paper_id"] = paper_id
        self.update(job_id, **fields)

    def request_cancel(self, job_id: str) -> Job | None:
        """Queued jobs are cancelled at once; running ones stop at their next step."""
        with self.db.write(bump=False) as s:
            job = s.get(Job, job_id)
            if job is None:
                return None
            if job.status in FINISHED:
                return job
            job.cancel_requested = True
            if job.status == "queued":
                job.status = "cancelled"
                job.finished_at = now()
            return job

    def is_cancel_requested(self, job_id: str) -> bool:
        with self.db.read() as s:
            return bool(s.execute(select(Job.cancel_requested).where(Job.id == job_id)).scalar())

    def reset_for_retry(self, job_id: str) -> Job | None:
        with self.db.write(bump=False) as s:
            job = s.get(Job, job_id)
            if job is None or job.status not in ("failed", "cancelled"):
                return None
            job.status = "queued"
            job.cancel_requested = False
            job.error_message = None
            job.steps_failed = []
            job.finished_at = None
            job.progress = 0.0
            return job

    def unfinished(self) -> list[Job]:
        with self.db.read() as s:
            return list(
                s.execute(
                    select(Job).where(Job.status.in_(ACTIVE)).order_by(Job.created_at)
                ).scalars()
            )

    def list(
        self,
        *,
        status: str | None = None,
        limit: int = 50,
        offset: int = 0,
        batch_id: str | None = None,
    ) -> tuple[list[Job], int]:
        with self.db.read() as s:
            q = select(Job)
            if status:
                q = q.where(Job.status == status)
            if batch_id:
                q = q.where(Job.batch_id == batch_id)
            total = s.execute(select(func.count()).select_from(q.subquery())).scalar_one()
            rows = s.execute(
                q.order_by(Job.created_at.desc()).limit(limit).offset(offset)
            ).scalars()
            return list(rows), total

    def counts(self) -> dict[str, int]:
        with self.db.read() as s:
            rows = s.execute(select(Job.status, func.count()).group_by(Job.status)).all()
        out = {k: 0 for k in ("queued", "processing", "completed", "failed", "cancelled")}
        out.update({k: v for k, v in rows})
        return out
