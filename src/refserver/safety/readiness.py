"""Disaster-recovery readiness: could we recover if this machine died now?

The score is computed from checked facts only, never from intentions: the backup
manifests on disk (the authority, DESIGN.md §6), the recorded drill, offsite and
consistency runs, the disk, and whether this process runs the schedule. Each
criterion carries its points and, when it fails, a recommendation naming the
exact command or setting that fixes it.
"""

from __future__ import annotations

import shutil
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from refserver.storage.models import CheckRun

DRILL_MAX_AGE = timedelta(days=8)
CONSISTENCY_KINDS = ("consistency", "check")
POINTS = {
    "recent_verified_backup": 2,
    "full_backup": 1,
    "restore_drill": 2,
    "offsite_copy": 2,
    "free_space": 1,
    "scheduler_running": 1,
    "consistency_clean": 1,
}
SCRIPTS_DIR = Path(__file__).resolve().parents[3] / "scripts"


def _setting(settings: Any, name: str, default: Any) -> Any:
    value = getattr(settings, name, None)
    return default if value is None else value


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _age(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    if hours >= 48:
        return f"{hours / 24:.1f} days"
    if hours >= 1:
        return f"{hours:.1f} h"
    return f"{delta.total_seconds() / 60:.0f} min"


_MANIFEST_CACHE: dict[str, tuple[tuple[Any, ...], list[Any]]] = {}
_CACHE_LOCK = threading.Lock()


def _manifests(settings: Any) -> list[Any]:
    """The manifests on disk, re-read only when a manifest file changed.

    Status pages and Prometheus scrapes call this often; a full backup's manifest
    lists every PDF, so parsing and checksumming them all each time would cost
    seconds on a large library.
    """
    from refserver.safety.manifest import list_manifests

    folder = Path(settings.backups_dir) / "metadata"
    try:
        signature = tuple(
            sorted(
                (p.name, st.st_mtime_ns, st.st_size)
                for p in folder.glob("*.json")
                for st in [p.stat()]
            )
        )
    except OSError:  # a manifest vanished while listing (pruned): read afresh
        signature = (time.time(),)
    key = str(folder)
    with _CACHE_LOCK:
        cached = _MANIFEST_CACHE.get(key)
        if cached is not None and cached[0] == signature:
            return list(cached[1])
    manifests = list_manifests(folder)[0]
    with _CACHE_LOCK:
        _MANIFEST_CACHE[key] = (signature, manifests)
    return list(manifests)


def _latest_check(ctx: Any, kinds: tuple[str, ...]) -> CheckRun | None:
    with ctx.db.read() as s:
        return s.execute(
            select(CheckRun)
            .where(CheckRun.kind.in_(kinds), CheckRun.status != "running")
            .order_by(CheckRun.started_at.desc(), CheckRun.id.desc())
            .limit(1)
        ).scalar_one_or_none()


def _backup_view(m: Any, now: datetime) -> dict[str, Any]:
    return {
        "backup_id": m.id,
        "type": m.kind,
        "created_at": m.created_at.isoformat(),
        "age_hours": round((now - m.created_at).total_seconds() / 3600, 2),
        "size_bytes": m.size_compressed,
        "verified": bool(m.verified),
        "verified_at": m.verified_at,
        "generation": m.generation,
    }


def _estimate_next_full(settings: Any, fulls: list[Any]) -> int:
    """Bytes the next full backup needs: the last full's size, else the live data's size."""
    if fulls:
        return int(fulls[-1].size_compressed)
    total = 0
    for path in (
        Path(settings.data_dir) / "refserver.db",
        Path(settings.chroma_path),
        Path(settings.files_dir),
    ):
        if path.is_file():
            total += path.stat().st_size
        elif path.is_dir():
            total += sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return total


def assess(ctx: Any, now: datetime | None = None) -> dict[str, Any]:
    """The full ``/admin/disaster-recovery/status`` answer."""
    from refserver.safety.scheduler import schedule_interval, scheduler_state

    settings = ctx.settings
    now = now or datetime.now(UTC)
    manifests = _manifests(settings)
    done = [m for m in manifests if m.status == "completed" and m.verified]
    fulls = [m for m in done if m.kind == "full"]
    criteria: list[dict[str, Any]] = []
    recs: list[str] = []

    def add(name: str, ok: bool, detail: str, fix: str | None = None) -> None:
        pts = POINTS[name]
        criteria.append({"name": name, "ok": ok, "detail": detail, "points": pts if ok else 0})
        if not ok and fix:
            recs.append(f"(+{pts}) {fix}")

    # 1. RPO: the newest verified backup is as young as the schedule promises.
    intervals = {
        n: schedule_interval(settings, n, now)
        for n in ("backup_incremental", "backup_full_daily", "backup_full_weekly")
    }
    enabled = [i for i in intervals.values() if i is not None]
    rpo = timedelta(hours=float(_setting(settings, "rpo_hours", 0))) or (
        min(enabled) if enabled else timedelta(hours=24)
    )
    allowed = rpo + max(timedelta(minutes=15), rpo * 0.1)
    newest = done[-1] if done else None
    if newest is None:
        add(
            "recent_verified_backup",
            False,
            "no verified backup exists",
            "Take a backup now: `refserver backup create --type full`.",
        )
    else:
        age = now - newest.created_at
        ok = age <= allowed
        add(
            "recent_verified_backup",
            ok,
            f"newest verified backup {newest.id} is {_age(age)} old (RPO {_age(rpo)})",
            None
            if ok
            else "Take a backup now (`refserver backup create --type incremental`) and keep the "
            "schedule running (`refserver serve` with REFSERVER_SCHEDULER_ENABLED=true).",
        )

    # 2. A verified full backup exists (the base every restore starts from).
    if fulls:
        add(
            "full_backup",
            True,
            f"newest verified full {fulls[-1].id} is {_age(now - fulls[-1].created_at)} old",
        )
    else:
        add(
            "full_backup",
            False,
            "no verified full backup",
            "Take a full backup: `refserver backup create --type full`.",
        )

    # 3. A passed restore drill within 8 days.
    drill = _latest_check(ctx, ("drill",))
    last_drill: dict[str, Any] | None = None
    if drill is None:
        add(
            "restore_drill",
            False,
            "no restore drill has run",
            "Run a restore drill: `refserver dr drill`.",
        )
    else:
        res = drill.result or {}
        age = now - _aware(drill.started_at)
        last_drill = {
            "check_run_id": drill.id,
            "status": drill.status,
            "passed": drill.status == "passed",
            "started_at": _aware(drill.started_at).isoformat(),
            "finished_at": _aware(drill.finished_at).isoformat() if drill.finished_at else None,
            "age_days": round(age.total_seconds() / 86400, 2),
            "backup_id": res.get("backup_id"),
            "error": res.get("error"),
        }
        if drill.status != "passed":
            add(
                "restore_drill",
                False,
                f"the last drill ({_age(age)} ago) failed: {res.get('error')}",
                "Find why the drill failed (`refserver dr drill` prints each check), fix the backup "
                "(`refserver backup verify <id>`; take a new full), then drill again.",
            )
        elif age > DRILL_MAX_AGE:
            add(
                "restore_drill",
                False,
                f"the last passed drill is {_age(age)} old (limit 8 days)",
                "Run a restore drill: `refserver dr drill` (the weekly schedule runs it: "
                "REFSERVER_SCHEDULE_DRILL).",
            )
        else:
            add("restore_drill", True, f"drill passed {_age(age)} ago on {res.get('backup_id')}")

    # 4. A verified offsite copy of the newest full backup.
    offsite = _latest_check(ctx, ("offsite",))
    target = str(_setting(settings, "offsite_target", "") or "")
    if offsite is None:
        add(
            "offsite_copy",
            False,
            "no offsite copy has been made",
            "Copy backups off this machine: set REFSERVER_OFFSITE_TARGET (a folder, sftp://… or "
            "s3://…; optionally REFSERVER_OFFSITE_KEY_FILE from `refserver offsite keygen KEYFILE`), "
            "then run `refserver offsite push`."
            if not target
            else "Run `refserver offsite push` (target configured but never pushed).",
        )
    else:
        res = offsite.result or {}
        verified_ids = set(res.get("verified_ids") or [])
        want = fulls[-1].id if fulls else None
        if offsite.status != "passed":
            add(
                "offsite_copy",
                False,
                f"the last offsite run failed: {res.get('error') or 'a copy did not verify'}",
                "Fix the target and run `refserver offsite push`, then `refserver offsite verify`.",
            )
        elif want is not None and want not in verified_ids:
            add(
                "offsite_copy",
                False,
                f"the newest full backup {want} has no verified offsite copy",
                "Run `refserver offsite push` (the scheduler does it after each backup when "
                "REFSERVER_OFFSITE_TARGET is set).",
            )
        else:
            add(
                "offsite_copy",
                True,
                f"{len(verified_ids)} backup(s) verified on {res.get('target')} "
                f"({_age(now - _aware(offsite.started_at))} ago"
                + (", encrypted)" if res.get("encrypted") else ")"),
            )

    # 5. Room for the next full backup.
    backups_dir = Path(settings.backups_dir)
    probe = backups_dir if backups_dir.exists() else Path(settings.data_dir)
    disk = shutil.disk_usage(probe)
    need = int(_estimate_next_full(settings, fulls) * 1.2)
    free_gb = round(disk.free / 1e9, 2)
    add(
        "free_space",
        disk.free >= need,
        f"{free_gb} GB free; the next full backup needs about {need / 1e9:.2f} GB",
        f"Free at least {max(need - disk.free, 0) / 1e9:.2f} GB on {probe}: prune old backups "
        "(`refserver backup prune`) or move REFSERVER_DATA_DIR to a larger disk.",
    )

    # 6. The schedule runs.
    sched = scheduler_state(ctx)
    add(
        "scheduler_running",
        bool(sched["scheduler_running"]),
        str(sched.get("reason", "")),
        "Run the server with the schedule on: `refserver serve` with "
        "REFSERVER_SCHEDULER_ENABLED=true (one process per data folder runs it).",
    )

    # 7. The last consistency check was clean (and recent).
    check = _latest_check(ctx, CONSISTENCY_KINDS)
    interval = schedule_interval(settings, "consistency_check", now) or timedelta(days=4)
    if check is None:
        add(
            "consistency_clean",
            False,
            "no consistency check has run",
            "Run a consistency check: `refserver check` (then `refserver check --fix` for safe repairs).",
        )
    else:
        age = now - _aware(check.started_at)
        clean = check.status in ("passed", "clean", "healthy", "ok") and check.total_issues == 0
        recent = age <= 2 * interval
        add(
            "consistency_clean",
            clean and recent,
            f"last check {_age(age)} ago: {check.total_issues} issue(s), status {check.status}",
            "Run `refserver check`; if it reports issues, `refserver check --fix` repairs the safe ones."
            if not clean
            else "Run `refserver check` (the last clean check is older than twice its schedule).",
        )

    score = sum(c["points"] for c in criteria)
    total = sum(POINTS.values())
    critical_ok = all(
        c["ok"] for c in criteria if c["name"] in ("recent_verified_backup", "full_backup")
    )
    if score == total:
        level = "excellent"
    elif score >= 8:
        level = "good"
    elif score >= 5:
        level = "fair"
    else:
        level = "poor"
    readiness = (
        "ready" if score >= 8 and critical_ok else ("at_risk" if critical_ok else "not_ready")
    )
    status = "healthy" if score == total else ("warning" if critical_ok else "critical")
    recent = [_backup_view(m, now) for m in reversed(done[-5:])]
    return {
        "status": status,
        "readiness": readiness,
        "readiness_score": f"{score}/{total}",
        "readiness_level": level,
        "criteria": criteria,
        "sqlite_backups": sum(
            1 for m in done if any(x.role in ("sqlite", "sqlite_delta") for x in m.members)
        ),
        "chromadb_backups": sum(1 for m in done if m.members_by_role("chromadb")),
        "recent_successful_backups": recent,
        "last_verified_backup": recent[0] if recent else None,
        "last_drill": last_drill,
        "free_disk_space_gb": free_gb,
        "scheduler_running": bool(sched["scheduler_running"]),
        "recovery_scripts_available": {
            "disaster_recovery": _script_ok("disaster_recovery.sh"),
            "backup_check": _script_ok("check_backups.sh"),
        },
        "recommendations": recs,
    }


def _script_ok(name: str) -> bool:
    import os

    path = SCRIPTS_DIR / name
    return path.is_file() and os.access(path, os.X_OK)


# --- the same facts for Prometheus -----------------------------------------------------------


class ProtectionCollector:
    """A prometheus_client custom collector: read at scrape time from the stores."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
        from sqlalchemy import func

        from refserver.storage.models import SchedulerRun

        ctx = self.ctx
        now = datetime.now(UTC)
        manifests = _manifests(ctx.settings)
        done = [m for m in manifests if m.status == "completed" and m.verified]

        age = GaugeMetricFamily(
            "refserver_backup_age_seconds",
            "Age of the newest verified backup by type.",
            labels=["type"],
        )
        size = GaugeMetricFamily(
            "refserver_backup_size_bytes",
            "Stored size of the newest verified backup by type.",
            labels=["type"],
        )
        duration = GaugeMetricFamily(
            "refserver_backup_duration_seconds",
            "Duration of the newest verified backup by type.",
            labels=["type"],
        )
        for kind in ("full", "incremental", "snapshot"):
            of_kind = [m for m in done if m.kind == kind]
            if of_kind:
                m = of_kind[-1]
                age.add_metric([kind], (now - m.created_at).total_seconds())
                size.add_metric([kind], float(m.size_compressed))
                duration.add_metric([kind], float(m.duration_seconds))
        yield age
        yield size
        yield duration
        count = GaugeMetricFamily(
            "refserver_backups", "Backups on disk by status.", labels=["status"]
        )
        statuses: dict[str, int] = {}
        for m in manifests:
            statuses[m.status] = statuses.get(m.status, 0) + 1
        for st, n in sorted(statuses.items()):
            count.add_metric([st], n)
        yield count

        drill = _latest_check(ctx, ("drill",))
        g = GaugeMetricFamily(
            "refserver_drill_last_passed", "1 if the last restore drill passed, else 0."
        )
        g.add_metric([], 1.0 if drill is not None and drill.status == "passed" else 0.0)
        yield g
        if drill is not None:
            g = GaugeMetricFamily("refserver_drill_age_seconds", "Age of the last restore drill.")
            g.add_metric([], (now - _aware(drill.started_at)).total_seconds())
            yield g
        check = _latest_check(ctx, CONSISTENCY_KINDS)
        if check is not None:
            g = GaugeMetricFamily(
                "refserver_consistency_issues", "Issues found by the last consistency check."
            )
            g.add_metric([], float(check.total_issues))
            yield g
            g = GaugeMetricFamily(
                "refserver_consistency_age_seconds", "Age of the last consistency check."
            )
            g.add_metric([], (now - _aware(check.started_at)).total_seconds())
            yield g
        offsite = _latest_check(ctx, ("offsite",))
        g = GaugeMetricFamily(
            "refserver_offsite_last_ok", "1 if the last offsite copy verified, else 0."
        )
        g.add_metric([], 1.0 if offsite is not None and offsite.status == "passed" else 0.0)
        yield g

        jobs = GaugeMetricFamily("refserver_jobs", "Job records by status.", labels=["status"])
        for st, n in sorted(ctx.jobs.counts().items()):
            jobs.add_metric([st], float(n))
        yield jobs
        try:
            pending = float(ctx.queue.pending())
        except Exception:
            pending = float("nan")
        g = GaugeMetricFamily("refserver_job_queue_pending", "Messages waiting in the job queue.")
        g.add_metric([], pending)
        yield g

        from refserver.safety.scheduler import scheduler_state

        g = GaugeMetricFamily("refserver_scheduler_running", "1 if this process runs the schedule.")
        g.add_metric([], 1.0 if scheduler_state(ctx)["scheduler_running"] else 0.0)
        yield g
        runs = CounterMetricFamily(
            "refserver_scheduler_runs",
            "Recorded scheduler runs by job and outcome.",
            labels=["job", "outcome"],
        )
        with ctx.db.read() as s:
            rows = s.execute(
                select(SchedulerRun.job_name, SchedulerRun.outcome, func.count()).group_by(
                    SchedulerRun.job_name, SchedulerRun.outcome
                )
            ).all()
        for job, outcome, n in rows:
            runs.add_metric([job, outcome], float(n))
        yield runs

        probe = Path(ctx.settings.backups_dir)
        disk = shutil.disk_usage(probe if probe.exists() else Path(ctx.settings.data_dir))
        g = GaugeMetricFamily("refserver_free_disk_bytes", "Free bytes on the backups disk.")
        g.add_metric([], float(disk.free))
        yield g
        report = assess(ctx, now)
        g = GaugeMetricFamily("refserver_readiness_score", "Disaster-recovery readiness (0-10).")
        g.add_metric([], float(report["readiness_score"].split("/")[0]))
        yield g


def render_metrics(ctx: Any) -> tuple[bytes, str]:
    """The Prometheus text exposition of :class:`ProtectionCollector` (own registry per call)."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(ProtectionCollector(ctx))  # type: ignore[arg-type]
    return generate_latest(registry), CONTENT_TYPE_LATEST
