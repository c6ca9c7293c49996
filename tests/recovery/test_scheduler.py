"""The schedule: triggers on a controllable clock, a missed run runs once, one scheduler per folder."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from refserver.safety import scheduler as sch
from refserver.storage.models import CheckRun, SchedulerRun
from tests.recovery.conftest import recovery_settings

ROOT = Path(__file__).resolve().parents[2]


def runs(ctx: Any, job: str) -> list[SchedulerRun]:
    with ctx.db.read() as s:
        return list(
            s.execute(
                select(SchedulerRun).where(SchedulerRun.job_name == job).order_by(SchedulerRun.id)
            ).scalars()
        )


def wait_runs(ctx: Any, job: str, n: int, timeout: float = 15) -> list[SchedulerRun]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = [r for r in runs(ctx, job) if r.outcome != "running"]
        if len(done) >= n:
            return done
        time.sleep(0.05)
    return [r for r in runs(ctx, job) if r.outcome != "running"]


def test_default_triggers_fire_when_the_issue_says(tmp_path: Path) -> None:
    s = recovery_settings(tmp_path / "d", timezone="Europe/Berlin")
    tz = ZoneInfo("Europe/Berlin")
    trig = sch.triggers(s)
    assert set(trig) == {spec.name for spec in sch.JOB_SPECS}
    now = datetime(2026, 3, 27, 10, 30, tzinfo=tz)  # a Friday, two days before DST starts
    nxt = {name: t.get_next_fire_time(None, now) for name, t in trig.items()}
    assert nxt["backup_incremental"] == datetime(2026, 3, 27, 11, 0, tzinfo=tz)
    assert nxt["backup_full_daily"] == datetime(2026, 3, 28, 3, 0, tzinfo=tz)
    assert nxt["backup_full_weekly"] == datetime(2026, 3, 29, 4, 0, tzinfo=tz)  # Sunday
    assert nxt["backup_full_weekly"].weekday() == 6
    assert nxt["restore_drill"] == datetime(2026, 3, 29, 5, 0, tzinfo=tz)
    assert nxt["consistency_check"] == datetime(2026, 3, 28, 2, 30, tzinfo=tz)
    assert nxt["health_check"] == datetime(2026, 3, 27, 11, 15, tzinfo=tz)
    # The weekly full on the DST night is still 04:00 local time (now UTC+2).
    assert nxt["backup_full_weekly"].utcoffset() == timedelta(hours=2)
    assert sch.schedule_interval(s, "backup_incremental", now) == timedelta(hours=1)
    assert sch.schedule_interval(s, "backup_full_weekly", now) == timedelta(days=7)


def test_schedules_and_time_zone_are_configurable(tmp_path: Path) -> None:
    s = recovery_settings(
        tmp_path / "d",
        timezone="Asia/Seoul",
        schedule_full_daily="30 1 * * *",
        schedule_incremental="",  # disabled
    )
    trig = sch.triggers(s)
    assert "backup_incremental" not in trig
    utc_now = datetime(2026, 6, 1, 0, 0, tzinfo=ZoneInfo("UTC"))  # 09:00 in Seoul
    nxt = trig["backup_full_daily"].get_next_fire_time(None, utc_now)
    assert nxt == datetime(2026, 6, 2, 1, 30, tzinfo=ZoneInfo("Asia/Seoul"))
    planned = {j["id"]: j for j in sch.planned_jobs(s, utc_now)}
    assert planned["backup_incremental"]["enabled"] is False
    assert planned["backup_incremental"]["next_run"] is None
    assert planned["backup_full_daily"]["setting"] == "REFSERVER_SCHEDULE_FULL_DAILY"


def test_coalescing_turns_many_missed_fires_into_one(tmp_path: Path) -> None:
    """What APScheduler runs for a job whose stored next run is 3 days old (fixed clock)."""
    from apscheduler.job import Job
    from apscheduler.schedulers.background import BackgroundScheduler

    s = recovery_settings(tmp_path / "d")
    trig = sch.triggers(s)["backup_incremental"]
    now = datetime(2026, 5, 10, 12, 20, tzinfo=ZoneInfo("UTC"))
    job = Job(
        BackgroundScheduler(), id="x", func=print, args=(), kwargs={}, trigger=trig, coalesce=True
    )
    job.next_run_time = now - timedelta(days=3)
    missed = job._get_run_times(now)
    assert len(missed) == 73  # hourly for 3 days...
    assert missed[-1:] == [datetime(2026, 5, 10, 12, 0, tzinfo=ZoneInfo("UTC"))]  # ...one run


def test_missed_run_after_downtime_runs_exactly_once_at_start(rctx: Any) -> None:
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.background import BackgroundScheduler

    handle = sch.start_scheduler(rctx)
    assert handle.running and rctx.scheduler is handle
    future = {j["id"]: j["next_run"] for j in handle.jobs()}
    assert all(v is not None for v in future.values())
    handle.shutdown()
    assert not runs(rctx, "health_check")

    # The server was down for three days: the stored next run of the hourly job is old.
    store = rctx.settings.data_dir / "scheduler.db"
    past = datetime.now(ZoneInfo("UTC")) - timedelta(days=3)
    jobstore = SQLAlchemyJobStore(url=f"sqlite:///{store}")
    jobstore.start(BackgroundScheduler(), "default")
    job = jobstore.lookup_job("health_check")
    job.next_run_time = past
    jobstore.update_job(job)
    jobstore.shutdown()

    handle = sch.start_scheduler(rctx)
    done = wait_runs(rctx, "health_check", 1)
    time.sleep(1.0)  # room for any (wrong) extra runs
    done = [r for r in runs(rctx, "health_check")]
    assert len(done) == 1, [(r.outcome, r.started_at) for r in done]
    assert done[0].outcome == "success" and done[0].finished_at is not None
    assert done[0].detail["trigger"] == "schedule"
    nxt = {j["id"]: j["next_run"] for j in handle.jobs()}
    assert datetime.fromisoformat(nxt["health_check"]) > datetime.now(ZoneInfo("UTC"))
    # The other jobs kept their stored (future) times and did not run.
    for name in ("backup_full_daily", "restore_drill"):
        assert nxt[name] == future[name]
        assert not runs(rctx, name)
    with rctx.db.read() as s:
        health = s.execute(select(CheckRun).where(CheckRun.kind == "health")).scalars().all()
    assert len(health) == 1 and health[0].status == "passed"


def test_every_run_is_recorded_with_its_outcome(rctx: Any) -> None:
    detail = sch.execute(rctx, "health_check", trigger="manual")
    assert detail["sqlite_quick_check"] == "ok"
    # A drill with no backup at all fails, and the failure is recorded with the reason.
    with pytest.raises(RuntimeError, match="restore drill failed"):
        sch.execute(rctx, "restore_drill", trigger="manual")
    rows = {r["job_name"]: r for r in sch.recent_runs(rctx.db)}
    assert rows["health_check"]["outcome"] == "success"
    assert rows["restore_drill"]["outcome"] == "failed"
    assert "no completed, verified" in rows["restore_drill"]["error"]
    assert rows["restore_drill"]["start"] and rows["restore_drill"]["end"]


def test_scheduled_backup_prunes_and_records(rctx: Any) -> None:
    detail = sch.execute(rctx, "backup_full_weekly", trigger="manual")
    assert detail["backup"]["status"] == "completed" and detail["backup"]["verified"]
    assert "prune" in detail
    from refserver.safety.backup import engine_of

    m = engine_of(rctx).get(detail["backup"]["backup_id"])
    assert m.tier == "weekly" and m.retention_days == 90  # kept longer
    compacted = detail["index_compacted"]  # the full-text index, first (when it needs it)
    assert compacted["skipped"] == (compacted["transactions"] == 0)
    assert 0.0 <= compacted["outside_share"] <= 1.0
    detail = sch.execute(rctx, "backup_incremental", trigger="manual")
    assert detail["backup"]["type"] == "incremental" and "promoted" not in detail
    assert "index_compacted" not in detail
    assert [r["outcome"] for r in sch.recent_runs(rctx.db)] == ["success", "success"]


def test_first_hourly_backup_of_a_new_install_is_a_full(rctx: Any) -> None:
    detail = sch.execute(rctx, "backup_incremental")
    assert detail["backup"]["type"] == "full" and "took a full" in detail["promoted"]
    assert sch.execute(rctx, "backup_incremental")["backup"]["type"] == "incremental"


CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    sys.path.insert(0, {root!r})
    from tests.recovery.conftest import recovery_settings
    from refserver.context import AppContext
    from refserver.safety.scheduler import start_scheduler
    ctx = AppContext(recovery_settings(Path(sys.argv[1])), with_vectors=False)
    handle = start_scheduler(ctx)
    print("RUNNING" if handle.running else "STANDBY " + handle.reason, flush=True)
    sys.stdin.readline()
    handle.shutdown()
    ctx.close()
    """
)


def test_only_one_scheduler_per_data_folder(rsettings: Any, tmp_path: Path) -> None:
    from refserver.context import AppContext

    data = rsettings.data_dir
    AppContext(rsettings, with_vectors=False).close()  # schema in place
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD.format(root=str(ROOT)), str(data)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = child.stdout.readline().strip() if child.stdout else ""
        assert line == "RUNNING", (line, child.stderr.read() if child.stderr else "")
        settings = recovery_settings(data, scheduler_lock_retry_seconds=0.2)
        ctx = AppContext(settings, with_vectors=False)
        try:
            handle = sch.start_scheduler(ctx)
            assert handle.running is False
            assert f"pid {child.pid}" in handle.reason
            assert sch.scheduler_state(ctx)["scheduler_running"] is False
            # The holder stops: the standby takes the schedule over.
            assert child.stdin is not None
            child.stdin.write("\n")
            child.stdin.flush()
            child.wait(timeout=20)
            deadline = time.monotonic() + 10
            while not handle.running and time.monotonic() < deadline:
                time.sleep(0.05)
            assert handle.running, handle.reason
            assert str(ctx.scheduler.reason).startswith("running in pid")
        finally:
            if ctx.scheduler is not None:
                ctx.scheduler.shutdown()
            ctx.close()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_app_starts_the_scheduler_and_shows_it(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from refserver.api.app import create_app
    from tests.conftest import login

    settings = recovery_settings(tmp_path / "data", scheduler_enabled=True)
    with TestClient(create_app(settings)) as client:
        headers = login(client)
        assert client.get("/admin/scheduler").status_code == 401
        body = client.get("/admin/scheduler", headers=headers).json()
        assert body["scheduler_running"] is True
        assert {j["id"] for j in body["jobs"]} == {s.name for s in sch.JOB_SPECS}
        assert all(j["next_run"] for j in body["jobs"])
        assert body["recent_runs"] == []
        assert client.get("/status", headers=headers).json()["scheduler_running"] is True
        backup_status = client.get("/admin/backup/status", headers=headers)
        if backup_status.status_code == 200:  # the backup area lists our jobs too
            assert len(backup_status.json()["sqlite"]["scheduled_jobs"]) == len(sch.JOB_SPECS)
    # Shutting the app down released the lock: another process could take over now.
    lock = sch.SchedulerLock(settings.data_dir / "scheduler.lock")
    assert lock.try_acquire()
    lock.release()


def test_a_bad_schedule_setting_does_not_take_the_server_down(tmp_path: Path) -> None:
    from refserver.context import AppContext

    settings = recovery_settings(tmp_path / "data", schedule_drill="61 * * * *")
    ctx = AppContext(settings, with_vectors=False)
    try:
        handle = sch.start_scheduler(ctx)
        assert handle.running is False
        assert "failed to start" in handle.reason and "schedule" in handle.reason
        state = sch.scheduler_state(ctx)
        assert state["scheduler_running"] is False and state["reason"] == handle.reason
        lock = sch.SchedulerLock(settings.data_dir / "scheduler.lock")
        assert lock.try_acquire()  # released: a fixed process can take over
        lock.release()
    finally:
        ctx.scheduler.shutdown()
        ctx.close()
