"""Scheduled protection: backups, pruning, checks and drills on a clock (issue #5).

One APScheduler 3.x ``BackgroundScheduler`` runs inside the serving process. Why
the pieces are as they are:

* **One scheduler per data folder.** Several server processes may share a data
  folder (scale-out with a Chroma server); two schedulers would take every backup
  twice. The process that holds an exclusive ``flock`` on
  ``<data_dir>/scheduler.lock`` runs the scheduler; the others stay on standby,
  report ``scheduler_running: false`` with the reason, and retry the lock so a
  standby takes over when the holder dies (the kernel frees the lock).
* **A missed run runs once.** Jobs live in a persistent job store
  (``<data_dir>/scheduler.db``, SQLAlchemyJobStore). After downtime a job's stored
  next run time is in the past; with ``coalesce=True`` and a large
  ``misfire_grace_time`` APScheduler runs it exactly once at start. When jobs are
  re-registered at start the stored next run time is kept (APScheduler would
  otherwise recompute it from "now" and silently drop the missed run).
* **Every run is recorded** in ``scheduler_runs`` (start, end, outcome, error,
  detail), including runs APScheduler skipped, so the UI and the readiness score
  read facts rather than assumptions.

Schedules are crontab strings read from settings (empty string = job disabled);
note ``day_of_week`` is given by name (``sun``): APScheduler counts 0 as Monday.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select

from refserver.storage.models import CheckRun, SchedulerRun

log = logging.getLogger(__name__)

LOCK_NAME = "scheduler.lock"
JOBSTORE_NAME = "scheduler.db"


def setting(settings: Any, name: str, default: Any) -> Any:
    """A protection setting, with its default while config.py does not declare it yet."""
    value = getattr(settings, name, None)
    return default if value is None else value


# --- the jobs -------------------------------------------------------------------


@dataclass(frozen=True)
class JobSpec:
    """One scheduled job: its id, the setting holding its crontab and its default."""

    name: str
    title: str
    setting: str
    default_cron: str
    executor: str = "default"


JOB_SPECS: tuple[JobSpec, ...] = (
    JobSpec("backup_incremental", "Hourly incremental backup", "schedule_incremental", "0 * * * *"),
    JobSpec("backup_full_daily", "Daily full backup", "schedule_full_daily", "0 3 * * *"),
    JobSpec(
        "backup_full_weekly",
        "Weekly full backup (kept longer)",
        "schedule_full_weekly",
        "0 4 * * sun",
    ),
    JobSpec("consistency_check", "Daily consistency check", "schedule_consistency", "30 2 * * *"),
    JobSpec("health_check", "Hourly health check", "schedule_health", "15 * * * *", "light"),
    JobSpec("restore_drill", "Weekly restore drill", "schedule_drill", "0 5 * * sun"),
)
SPECS_BY_NAME = {s.name: s for s in JOB_SPECS}
BACKUP_JOBS = {
    "backup_incremental": "incremental",
    "backup_full_daily": "full",
    "backup_full_weekly": "full",
}


def timezone_of(settings: Any) -> ZoneInfo:
    return ZoneInfo(str(setting(settings, "timezone", "UTC")))


def triggers(settings: Any) -> dict[str, Any]:
    """The configured CronTriggers by job name (disabled jobs are left out)."""
    from apscheduler.triggers.cron import CronTrigger

    tz = timezone_of(settings)
    out: dict[str, Any] = {}
    for spec in JOB_SPECS:
        expr = str(setting(settings, spec.setting, spec.default_cron)).strip()
        if expr:
            out[spec.name] = CronTrigger.from_crontab(expr, timezone=tz)
    return out


def schedule_interval(settings: Any, name: str, now: datetime | None = None) -> timedelta | None:
    """Time between two fires of job ``name`` around ``now`` (None if disabled).

    The readiness score and the alerts judge a backup's age against this, so a
    user who schedules daily instead of hourly is not told off for it.
    """
    trig = triggers(settings).get(name)
    if trig is None:
        return None
    now = now or datetime.now(timezone_of(settings))
    first = trig.get_next_fire_time(None, now)
    if first is None:
        return None
    second = trig.get_next_fire_time(first, first + timedelta(seconds=1))
    return None if second is None else second - first


def stored_next_runs(settings: Any) -> dict[str, str]:
    """Next run times kept in the persistent job store (read without starting a scheduler)."""
    import sqlite3

    path = Path(settings.data_dir) / JOBSTORE_NAME
    if not path.exists():
        return {}
    tz = timezone_of(settings)
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = conn.execute("SELECT id, next_run_time FROM apscheduler_jobs").fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return {}
    return {
        str(i): datetime.fromtimestamp(float(t), tz).isoformat() for i, t in rows if t is not None
    }


def planned_jobs(settings: Any, now: datetime | None = None) -> list[dict[str, Any]]:
    """Jobs with their next fire time computed from the settings (no scheduler needed)."""
    now = now or datetime.now(timezone_of(settings))
    trigs = triggers(settings)
    out = []
    for spec in JOB_SPECS:
        trig = trigs.get(spec.name)
        nxt = trig.get_next_fire_time(None, now) if trig else None
        out.append(
            {
                "id": spec.name,
                "name": spec.title,
                "schedule": str(setting(settings, spec.setting, spec.default_cron)),
                "setting": f"REFSERVER_{spec.setting.upper()}",
                "enabled": trig is not None,
                "next_run": nxt.isoformat() if nxt else None,
            }
        )
    return out


# --- run records ----------------------------------------------------------------


@contextmanager
def recorded_run(db: Any, job_name: str, trigger: str = "schedule") -> Iterator[dict[str, Any]]:
    """Record one run in ``scheduler_runs``; the body fills the yielded detail dict.

    The outcome is ``success`` unless the body raises (``failed``, with the error)
    or sets ``detail["outcome"]`` itself (e.g. ``skipped``).
    """
    with db.write(bump=False) as s:
        row = SchedulerRun(job_name=job_name, outcome="running", detail={"trigger": trigger})
        s.add(row)
        s.flush()
        run_id = row.id
    detail: dict[str, Any] = {"trigger": trigger}
    outcome, error = "success", None
    try:
        yield detail
        outcome = str(detail.pop("outcome", "success"))
        error = detail.pop("error", None)
    except BaseException as exc:
        outcome, error = "failed", f"{type(exc).__name__}: {exc}"
        log.error("scheduled job %s failed: %s", job_name, error)
        detail["traceback"] = traceback.format_exc(limit=6)
        raise
    finally:
        with db.write(bump=False) as s:
            row = s.get(SchedulerRun, run_id)
            if row is not None:
                row.finished_at = datetime.now(UTC)
                row.outcome = outcome
                row.error = error
                row.detail = _jsonable(detail)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def recent_runs(db: Any, limit: int = 50, job_name: str | None = None) -> list[dict[str, Any]]:
    with db.read() as s:
        q = select(SchedulerRun).order_by(SchedulerRun.id.desc()).limit(limit)
        if job_name:
            q = q.where(SchedulerRun.job_name == job_name)
        rows = list(s.execute(q).scalars())
    return [
        {
            "id": r.id,
            "job_name": r.job_name,
            "start": _iso(r.started_at),
            "end": _iso(r.finished_at),
            "outcome": r.outcome,
            "error": r.error,
            "detail": r.detail or {},
        }
        for r in rows
    ]


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.isoformat()


# --- what each job does ------------------------------------------------------------


class EngineMissing(RuntimeError):
    """A part this job needs (backup engine, consistency checker) is not installed."""


def _engine(module: str, *names: str) -> Callable[..., Any]:
    """The first of ``names`` found in ``module``; fails clearly when absent."""
    import importlib

    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        raise EngineMissing(f"{module} is not available ({exc})") from exc
    for name in names:
        fn = getattr(mod, name, None)
        if callable(fn):
            return fn
    raise EngineMissing(f"{module} provides none of {', '.join(names)}")


def backup_engine(ctx: Any) -> Any:
    """The process's shared backup engine (its lock keeps backups, restores and prunes apart)."""
    try:
        from refserver.safety.backup import engine_of
    except ImportError as exc:
        raise EngineMissing(
            f"the backup engine (refserver.safety.backup) is not available: {exc}"
        ) from exc
    return engine_of(ctx)


def run_backup_job(
    ctx: Any, kind: str, retention_days: int | None, description: str, tier: str | None = None
) -> dict[str, Any]:
    """Take a backup through the backup engine, prune, then replicate offsite."""
    engine = backup_engine(ctx)
    promoted = None
    if kind == "incremental" and engine.latest_head() is None:
        # A new install (or one whose fulls were all lost): the hourly job lays the base.
        kind, promoted = "full", "no verified full backup to build an incremental on: took a full"
    compacted = None
    if kind == "full":  # so the incrementals on this full carry no merges of the old index
        from refserver.storage.fts import compact

        compacted = compact(ctx.db)
    m = engine.create(kind, description=description, retention_days=retention_days, tier=tier)
    detail: dict[str, Any] = {
        "backup": {
            "backup_id": m.id,
            "type": m.kind,
            "status": m.status,
            "verified": m.verified,
            "size_bytes": m.size_compressed,
            "duration_seconds": m.duration_seconds,
        }
    }
    if promoted:
        detail["promoted"] = promoted
    if compacted is not None:
        detail["index_compacted"] = {
            "transactions": compacted.transactions,
            "seconds": compacted.seconds,
            "worst_ms": compacted.worst_ms,
            "outside_share": compacted.outside_share,
            "skipped": compacted.skipped,
        }
    if m.status != "completed" or not m.verified:
        raise RuntimeError(f"backup {m.id} ended {m.status} (verified={m.verified}): {m.error}")
    detail["prune"] = run_prune(ctx)
    if setting(ctx.settings, "offsite_target", ""):
        from refserver.safety import offsite

        result = offsite.push_and_record(ctx)
        detail["offsite"] = {"ok": result["ok"], "verified_ids": result["verified_ids"]}
        if not result["ok"]:
            raise RuntimeError(
                f"backup {m.id} taken, but the offsite copy failed: {result['error']}"
            )
        keep_days = float(setting(ctx.settings, "offsite_keep_days", 0))
        if keep_days > 0:
            target, key = offsite.configured(ctx.settings)
            with target:
                pruned = offsite.prune_remote(target, key, keep_days)
            detail["offsite"]["pruned"] = pruned["removed"]
    return detail


def run_prune(ctx: Any) -> dict[str, Any]:
    """Apply the retention policy after a backup (never the newest verified full)."""
    prune = _engine("refserver.safety.retention", "prune", "apply_retention")
    result = prune(ctx, dry_run=False)
    if isinstance(result, dict):
        return {k: _jsonable(v) for k, v in result.items()}
    return {"result": _jsonable(getattr(result, "__dict__", result))}


def run_consistency_job(ctx: Any) -> dict[str, Any]:
    """The daily check through the consistency checker (it records its own CheckRun)."""
    check = _engine("refserver.safety.consistency", "run_check")
    data = check(ctx)
    out = {
        "overall_status": data.get("overall_status"),
        "total_issues": data.get("total_issues"),
        "issues_by_type": data.get("issues_by_type", {}),
        "check_run_id": data.get("run_id"),
    }
    if out["total_issues"]:
        out["outcome"] = "warning"  # the check ran; what it found is in the detail
    return out


def run_health_job(ctx: Any) -> dict[str, Any]:
    """Cheap liveness facts, recorded as a CheckRun, then the alert rules."""
    import shutil

    from refserver.safety import alerts

    facts: dict[str, Any] = {}
    problems: list[str] = []
    try:
        facts["generation"] = ctx.db.generation()
        with ctx.db.read() as s:
            facts["sqlite_quick_check"] = (
                s.connection().exec_driver_sql("PRAGMA quick_check").scalar()
            )
        if facts["sqlite_quick_check"] != "ok":
            problems.append(f"SQLite quick_check: {facts['sqlite_quick_check']}")
    except Exception as exc:
        problems.append(f"database unreadable: {exc}")
    if ctx.vectors is not None:
        try:
            from refserver.storage.vectors import COLLECTIONS

            facts["chroma_counts"] = {c: ctx.vectors.count(c) for c in COLLECTIONS}
        except Exception as exc:
            problems.append(f"ChromaDB unreadable: {exc}")
    disk = shutil.disk_usage(ctx.settings.data_dir)
    facts["free_disk_bytes"] = disk.free
    facts["queue"] = ctx.jobs.counts()
    fired = alerts.evaluate(ctx)
    facts["alerts"] = [a["kind"] for a in fired]
    with ctx.db.write(bump=False) as s:
        s.add(
            CheckRun(
                kind="health",
                status="failed" if problems else "passed",
                finished_at=datetime.now(UTC),
                total_issues=len(problems),
                result={"facts": _jsonable(facts), "problems": problems},
            )
        )
    if problems:
        raise RuntimeError("; ".join(problems))
    return facts


def run_drill_job(ctx: Any) -> dict[str, Any]:
    from refserver.safety import alerts, drill

    result = drill.run_drill(ctx)
    if not result["passed"]:
        alerts.fire(ctx, "drill_failed", f"restore drill failed: {result.get('error')}", result)
        raise RuntimeError(f"restore drill failed: {result.get('error')}")
    return {"check_run_id": result.get("check_run_id"), "backup_id": result.get("backup_id")}


def execute(ctx: Any, name: str, trigger: str = "schedule") -> dict[str, Any]:
    """Run job ``name`` now and record it; re-raises a failure after recording it."""
    if name not in SPECS_BY_NAME:
        raise KeyError(f"no scheduled job {name!r}; known: {', '.join(SPECS_BY_NAME)}")
    with recorded_run(ctx.db, name, trigger) as detail:
        try:
            if name in BACKUP_JOBS:
                weekly = name == "backup_full_weekly"
                retention = (
                    int(setting(ctx.settings, "weekly_backup_retention_days", 90))
                    if weekly
                    else None
                )
                detail.update(
                    run_backup_job(
                        ctx,
                        BACKUP_JOBS[name],
                        retention,
                        f"scheduled: {SPECS_BY_NAME[name].title.lower()}",
                        tier="weekly" if weekly else None,
                    )
                )
            elif name == "consistency_check":
                detail.update(run_consistency_job(ctx))
            elif name == "health_check":
                detail.update(run_health_job(ctx))
            elif name == "restore_drill":
                detail.update(run_drill_job(ctx))
        except Exception as exc:
            if name in BACKUP_JOBS:
                from refserver.safety import alerts

                alerts.fire(ctx, "backup_failed", f"{name} failed: {exc}", {"job": name})
            raise
    return detail


# --- the lock ---------------------------------------------------------------------


class SchedulerLock:
    """Exclusive ``flock`` on ``<data_dir>/scheduler.lock``; freed by the kernel on death."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.fsync(fd)
        self._fd = fd
        return True

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "unknown"
        except OSError:
            return "unknown"

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


# --- the scheduler ------------------------------------------------------------------

_HANDLES: dict[str, ProtectionScheduler] = {}


def _scheduled_entry(job_name: str, key: str) -> None:
    """What the persistent job store references (by name): run a job on the live handle."""
    handle = _HANDLES.get(key)
    if handle is None:
        log.error("scheduled job %s fired without a scheduler for %s", job_name, key)
        return
    try:
        execute(handle.ctx, job_name)
    except Exception:
        log.debug("job %s failed (recorded)", job_name, exc_info=True)


class ProtectionScheduler:
    """``ctx.scheduler``: the APScheduler when this process holds the lock, else a standby."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        self.data_dir = Path(ctx.settings.data_dir)
        self.key = str(self.data_dir)
        self.lock = SchedulerLock(self.data_dir / LOCK_NAME)
        self.scheduler: Any = None
        self.reason: str = "not started"
        self._stop = threading.Event()
        self._standby: threading.Thread | None = None
        self._mutex = threading.Lock()

    @property
    def running(self) -> bool:
        return self.scheduler is not None and bool(self.scheduler.running)

    def start(self) -> bool:
        """Take the lock and start, or stay on standby and keep retrying the lock."""
        with self._mutex:
            if self.running:
                return True
            self._stop.clear()
            if self._standby is not None and not self._standby.is_alive():
                self._standby = None
            if self.lock.try_acquire():
                return self._start_or_explain()
            self.reason = (
                f"another process (pid {self.lock.holder()}) holds {self.lock.path}: "
                "it runs the schedule for this data folder"
            )
            log.info("scheduler on standby: %s", self.reason)
        self._start_standby()
        return False

    def _start_standby(self) -> None:
        if self._standby is not None:
            return
        every = float(setting(self.settings, "scheduler_lock_retry_seconds", 60))

        def retry() -> None:
            while not self._stop.wait(every):
                with self._mutex:
                    if self.running:
                        return
                    if self.lock.try_acquire():
                        log.info("scheduler lock taken over; starting the schedule")
                        self._start_or_explain()
                        return

        self._standby = threading.Thread(target=retry, name="scheduler-standby", daemon=True)
        self._standby.start()

    def _start_or_explain(self) -> bool:
        """Start; a bad setting (time zone, crontab) must not take the server down with it."""
        try:
            self._start_locked()
        except Exception as exc:
            self.lock.release()
            self.reason = (
                f"failed to start: {type(exc).__name__}: {exc} (check the schedule settings)"
            )
            log.exception("scheduler failed to start")
            return False
        if not self.settings.chroma_host:
            # Scheduled backups open their Chroma copy in a child forked from a
            # server that has imported chromadb once (see safety.chroma_probe).
            from refserver.safety.chroma_probe import warm_up

            try:
                warm_up()
            except Exception:  # only makes the first check slower
                log.warning("could not start the ChromaDB probe's fork server", exc_info=True)
        return True

    def _start_locked(self) -> None:
        from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
        from apscheduler.schedulers.background import BackgroundScheduler

        tz = timezone_of(self.settings)
        grace = int(setting(self.settings, "scheduler_misfire_grace_seconds", 30 * 24 * 3600))
        sched = BackgroundScheduler(
            jobstores={
                "default": SQLAlchemyJobStore(url=f"sqlite:///{self.data_dir / JOBSTORE_NAME}")
            },
            # Heavy jobs one at a time (2 cores, one writer); the health check beside them.
            executors={"default": ThreadPoolExecutor(1), "light": ThreadPoolExecutor(1)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": grace},
            timezone=tz,
        )
        sched.start(paused=True)
        try:
            self._sync_jobs(sched)
        except Exception:
            sched.shutdown(wait=False)
            raise
        sched.add_listener(self._on_skipped, EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES)
        _HANDLES[self.key] = self
        self.scheduler = sched
        sched.resume()
        self.reason = f"running in pid {os.getpid()}"
        log.info("scheduler running (%s jobs, time zone %s)", len(sched.get_jobs()), tz)

    def _sync_jobs(self, sched: Any) -> None:
        """Register the configured jobs, keeping a stored next run time that was missed."""
        wanted = triggers(self.settings)
        now = datetime.now(timezone_of(self.settings))
        for job in sched.get_jobs():
            if job.id not in wanted:
                sched.remove_job(job.id)
        for name, trig in wanted.items():
            spec = SPECS_BY_NAME[name]
            old = sched.get_job(name)
            extra: dict[str, Any] = {}
            if old is not None and old.next_run_time is not None:
                same = repr(old.trigger) == repr(trig)
                if same or old.next_run_time <= now:
                    extra["next_run_time"] = old.next_run_time
            sched.add_job(
                _scheduled_entry,
                trig,
                args=[name, self.key],
                id=name,
                name=spec.title,
                executor=spec.executor,
                replace_existing=True,
                **extra,
            )

    def _on_skipped(self, event: Any) -> None:
        from apscheduler.events import EVENT_JOB_MISSED

        outcome = "missed" if event.code == EVENT_JOB_MISSED else "skipped"
        with self.ctx.db.write(bump=False) as s:
            s.add(
                SchedulerRun(
                    job_name=event.job_id,
                    outcome=outcome,
                    finished_at=datetime.now(UTC),
                    detail={"scheduled_for": _iso(getattr(event, "scheduled_run_time", None))},
                )
            )

    def jobs(self) -> list[dict[str, Any]]:
        """Jobs with their next run times: live ones when running, else as configured."""
        planned = planned_jobs(self.settings)
        if not self.running:
            return planned
        live = {j.id: j for j in self.scheduler.get_jobs()}
        for item in planned:
            job = live.get(item["id"])
            if job is not None:
                item["next_run"] = _iso(job.next_run_time)
        return planned

    def get_jobs(self) -> list[Any]:
        """APScheduler's jobs (what the backup status route lists); none on standby."""
        return list(self.scheduler.get_jobs()) if self.running else []

    def run_now(self, name: str) -> dict[str, Any]:
        return execute(self.ctx, name, trigger="manual")

    def status(self) -> dict[str, Any]:
        return {
            "scheduler_running": self.running,
            "reason": self.reason,
            "timezone": str(timezone_of(self.settings)),
            "lock_file": str(self.lock.path),
            "jobstore": str(self.data_dir / JOBSTORE_NAME),
        }

    def shutdown(self, wait: bool = True) -> None:
        self._stop.set()
        with self._mutex:
            if self.scheduler is not None:
                try:
                    self.scheduler.shutdown(wait=wait)
                finally:
                    self.scheduler = None
                    _HANDLES.pop(self.key, None)
            self.lock.release()
            self.reason = "stopped"


def start_scheduler(ctx: Any) -> ProtectionScheduler:
    """Start (or stand by) and set ``ctx.scheduler``; called by app.py at startup."""
    existing = getattr(ctx, "scheduler", None)
    if isinstance(existing, ProtectionScheduler):
        existing.start()
        return existing
    handle = ProtectionScheduler(ctx)
    ctx.scheduler = handle
    handle.start()
    return handle


def scheduler_state(ctx: Any) -> dict[str, Any]:
    """Is a scheduler running in this process, and if not, why."""
    handle = getattr(ctx, "scheduler", None)
    if isinstance(handle, ProtectionScheduler):
        return handle.status()
    running = bool(handle is not None and getattr(handle, "running", False))
    if running:
        reason = "running"
    elif not setting(ctx.settings, "scheduler_enabled", True):
        reason = "disabled by REFSERVER_SCHEDULER_ENABLED=false"
    else:
        reason = (
            "not started in this process (the CLI never runs the schedule; `refserver serve` does)"
        )
    return {
        "scheduler_running": running,
        "reason": reason,
        "timezone": str(timezone_of(ctx.settings)),
    }
