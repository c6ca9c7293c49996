"""Backups as jobs, and the public shapes the API and CLI show.

Small libraries are backed up inside the request; larger ones run as a
``backup`` job (DESIGN.md §7) whose progress the job record shows. A restore
replaces the database that holds its own job record, so the handler writes the
record again after the swap.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import UTC, datetime
from typing import Any

from refserver.safety.backup import BackupEngine, BackupError, engine_of
from refserver.safety.manifest import Manifest
from refserver.storage.db import WritesPaused
from refserver.storage.fts import compact

log = logging.getLogger(__name__)

SYNC_LIMIT_BYTES = 256 << 20  # below this a backup/restore answers in the request


def iso_ts(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def record_public(m: Manifest) -> dict[str, Any]:
    """The API's backup record (``description`` is always a string)."""
    sqlite = (m.members_by_role("sqlite") or m.members_by_role("sqlite_delta") or [None])[0]
    chroma = (m.members_by_role("chromadb") or [None])[0]
    files = m.members_by_role("file")
    out: dict[str, Any] = {
        "backup_id": m.id,
        "id": m.id,
        "type": m.kind,
        "status": m.status,
        "size_bytes": m.size_compressed,
        "raw_size_bytes": m.size_raw,
        "compressed": m.compression != "none",
        "compression": m.compression,
        "checksum": m.checksum,
        "description": m.description or "",
        "retention_days": m.retention_days,
        "created_at": m.created,
        "duration_seconds": m.duration_seconds,
        "parent_id": m.parent,
        "base_id": m.base,
        "generation": m.generation,
        "verified": m.verified,
        "verified_at": m.verified_at,
        "error": m.error,
        "counts": dict(m.counts),
        "schema_revision": m.schema_revision,
        "app_version": m.app_version,
        "embedding": dict(m.embedding),
        "tier": m.tier,
        "unified": m.unified,
        "barrier_ms": m.barrier_ms,
        "notes": list(m.notes),
        "safety_for": m.safety_for,
    }
    if m.unified:
        out["unified_id"] = m.id
        out["components"] = {
            "sqlite": {
                "included": sqlite is not None,
                "member": sqlite.name if sqlite else None,
                "size_bytes": sqlite.size_compressed if sqlite else 0,
                "sha256": sqlite.sha256 if sqlite else None,
                "generation": m.generation,
            },
            "chromadb": {
                "included": chroma is not None,
                "member": chroma.name if chroma else None,
                "size_bytes": chroma.size_compressed if chroma else 0,
                "sha256": chroma.sha256 if chroma else None,
                "counts": dict(m.chroma.get("counts") or m.chroma.get("sqlite_counts") or {}),
                "restore": "copy" if chroma else "rebuilt from the SQLite vectors",
            },
            "files": {
                "included": True,
                "count": m.counts.get("files", len(files)),
                "added": len(m.files_added),
                "removed": len(m.files_removed),
                "size_bytes": sum(f.size_compressed for f in files if f.sha256 in m.files_added),
            },
        }
    return out


def scheduled_jobs(ctx: Any) -> tuple[bool, list[dict[str, Any]]]:
    """(running, jobs) of the APScheduler ``ctx.scheduler`` if there is one."""
    sched = getattr(ctx, "scheduler", None)
    if sched is None:
        return False, []
    running = bool(getattr(sched, "running", False))
    jobs: list[dict[str, Any]] = []
    try:
        for job in sched.get_jobs():
            nxt = getattr(job, "next_run_time", None)
            jobs.append(
                {
                    "id": str(job.id),
                    "name": str(getattr(job, "name", job.id)),
                    "next_run": nxt.isoformat() if nxt else None,
                }
            )
    except Exception:  # a scheduler that is shutting down
        log.debug("could not list scheduled jobs", exc_info=True)
    return running, jobs


def status_public(ctx: Any) -> dict[str, Any]:
    engine = engine_of(ctx)
    st = engine.status()
    running, jobs = scheduled_jobs(ctx)
    manifests: list[Manifest] = st["manifests"]
    latest: Manifest | None = st["latest"]
    chroma: list[Manifest] = st["chroma"]
    last_any = manifests[-1] if manifests else None
    if latest is None:
        overall = "no_backups"
    elif last_any is not None and last_any.status in ("failed", "damaged"):
        overall = "degraded"
    else:
        overall = "healthy"
    chroma_path = ctx.settings.chroma_path
    return {
        "sqlite": {
            "scheduler_running": running,
            "total_backups": len(manifests),
            "backup_counts": st["counts"],
            "total_size_bytes": st["sqlite_total_size"],
            "latest_backup": record_public(latest) if latest else None,
            "scheduled_jobs": jobs,
        },
        "chromadb": {
            "directory_exists": bool(chroma_path and chroma_path.exists()),
            "total_backups": len(chroma),
            "latest_backup": record_public(chroma[-1]) if chroma else None,
            "total_size_bytes": st["chroma_size"],
        },
        "files": {
            "directory_exists": engine.layout.files.exists(),
            "total_files": st["files_count"],
            "total_size_bytes": st["files_size"],
            "live_files": sum(1 for _ in ctx.files.iter_files()),
        },
        "unified_backup_available": st["unified_available"],
        "status": overall,
        "last_backup": record_public(last_any) if last_any else None,
    }


def library_bytes(ctx: Any) -> int:
    s = ctx.settings
    total = 0
    if s.is_sqlite and s.sqlite_path.exists():
        total += s.sqlite_path.stat().st_size
    total += ctx.files.total_bytes()
    return total


def _progress_writer(ctx: Any, job_id: str):  # noqa: ANN202 - a callback
    last = [-1.0]

    def progress(stage: str, fraction: float) -> None:
        pct = round(100 * fraction, 1)
        if pct - last[0] < 2 and fraction < 1:
            return
        last[0] = pct
        # during a restore swap writes are paused; the record is rewritten afterwards
        with contextlib.suppress(WritesPaused):
            ctx.jobs.update(job_id, current_step=stage, progress=min(pct, 99.0))

    return progress


def submit_backup(ctx: Any, params: dict[str, Any], username: str | None) -> dict[str, Any]:
    """Run a small backup now, queue a large one; returns the backup record."""
    engine = engine_of(ctx)
    kind = params["kind"]
    if library_bytes(ctx) < SYNC_LIMIT_BYTES:
        if kind == "full":
            compact(ctx.db)  # as the scheduled full does: small incrementals after it
        m = engine.create(
            kind,
            compress=params.get("compress", True),
            description=params.get("description") or "",
            retention_days=params.get("retention_days"),
            unified=params.get("unified", False),
        )
        ctx.audit("backup.create", username=username, target=m.id, detail={"status": m.status})
        return record_public(m)
    backup_id = engine.allocate(kind)
    job_id = ctx.jobs.create(
        kind="backup",
        filename=backup_id,
        params={**params, "backup_id": backup_id},
        created_by=username,
    )
    ctx.queue.enqueue(job_id, "high")
    ctx.audit("backup.queue", username=username, target=backup_id, detail={"job_id": job_id})
    return {
        "backup_id": backup_id,
        "id": backup_id,
        "type": kind,
        "status": "queued",
        "size_bytes": 0,
        "compressed": params.get("compress", True),
        "checksum": None,
        "description": params.get("description") or "",
        "retention_days": params.get("retention_days"),
        "job_id": job_id,
        **(
            {"unified_id": backup_id, "components": {"sqlite": {}, "chromadb": {}, "files": {}}}
            if params.get("unified")
            else {}
        ),
    }


def run_backup_job(ctx: Any, job_id: str) -> None:
    job = ctx.jobs.start(job_id)
    if job is None:
        return
    p = dict(job.params or {})
    engine = engine_of(ctx)
    try:
        if p["kind"] == "full":
            ctx.jobs.update(job_id, current_step="compacting the full-text index")
            compact(ctx.db, should_stop=lambda: ctx.jobs.is_cancel_requested(job_id))
        m = engine.create(
            p["kind"],
            compress=p.get("compress", True),
            description=p.get("description") or "",
            retention_days=p.get("retention_days"),
            unified=p.get("unified", False),
            backup_id=p.get("backup_id")
            if p.get("backup_id") and not engine.exists(p["backup_id"])
            else None,
            progress=_progress_writer(ctx, job_id),
            cancelled=lambda: ctx.jobs.is_cancel_requested(job_id),
        )
    except BackupError as exc:
        ctx.jobs.finish(job_id, "failed", error=str(exc))
        return
    summary = record_public(m)
    if m.status == "completed":
        ctx.jobs.finish(job_id, "completed", summary=summary)
    else:
        ctx.jobs.finish(job_id, "failed", error=m.error, summary=summary)


def run_restore_job(ctx: Any, job_id: str) -> None:
    from refserver.safety.restore import restore

    job = ctx.jobs.start(job_id)
    if job is None:
        return
    p = dict(job.params or {})
    created_by = job.created_by
    try:
        out = restore(
            engine_of(ctx),
            p.get("backup_id"),
            at=p.get("at"),
            target_path=p.get("target_path"),
            progress=_progress_writer(ctx, job_id),
            username=created_by,
        )
        status, error = "completed", None
    except Exception as exc:  # recorded on the job; nothing live was changed before the swap
        log.exception("restore job %s failed", job_id)
        out, status, error = {}, "failed", str(exc)
    if ctx.jobs.get(job_id) is None:  # the restored database predates this job
        ctx.jobs.create(
            kind="restore",
            filename=str(p.get("backup_id") or ""),
            params=p,
            created_by=created_by,
            status="processing",
            job_id=job_id,
        )
    ctx.jobs.finish(job_id, status, error=error, summary=out)


def register_jobs(ctx: Any) -> BackupEngine:
    engine = engine_of(ctx)
    ctx.queue.register("backup", lambda job_id: run_backup_job(ctx, job_id))
    ctx.queue.register("restore", lambda job_id: run_restore_job(ctx, job_id))
    return engine
