"""Readiness score from checked facts (each criterion moves it) and alerts to a real webhook."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from refserver.safety import alerts, offsite, readiness
from refserver.storage.models import CheckRun
from tests.recovery.conftest import full_backup


def criteria(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in report["criteria"]}


def score(report: dict[str, Any]) -> int:
    return int(report["readiness_score"].split("/")[0])


def record_check(ctx: Any, kind: str, status: str, issues: int = 0, **when: Any) -> None:
    started = datetime.now(UTC) - timedelta(**when) if when else datetime.now(UTC)
    with ctx.db.write(bump=False) as s:
        s.add(
            CheckRun(
                kind=kind,
                status=status,
                started_at=started,
                finished_at=started,
                total_issues=issues,
                result={"error": None if status == "passed" else "seeded failure"},
            )
        )


def test_each_criterion_moves_the_score(rctx: Any, tmp_path: Path, monkeypatch: Any) -> None:
    r = readiness.assess(rctx)
    assert r["readiness_score"] == "1/10"  # only free space holds on an unprotected library
    assert r["readiness"] == "not_ready" and r["status"] == "critical"
    assert any("refserver backup create --type full" in x for x in r["recommendations"])
    assert r["last_verified_backup"] is None and r["last_drill"] is None
    assert r["recent_successful_backups"] == [] and r["sqlite_backups"] == 0

    m = full_backup(rctx)  # +2 recent backup, +1 full
    r = readiness.assess(rctx)
    assert score(r) == 4
    c = criteria(r)
    assert c["recent_verified_backup"]["ok"] and c["full_backup"]["ok"]
    assert r["last_verified_backup"]["backup_id"] == m.id
    assert r["sqlite_backups"] == 1 and r["chromadb_backups"] == 1

    # The same backup judged three hours later breaks the hourly RPO.
    later = readiness.assess(rctx, now=datetime.now(UTC) + timedelta(hours=3))
    assert not criteria(later)["recent_verified_backup"]["ok"]
    assert score(later) == 2
    # A daily-only schedule makes the same age acceptable.
    rctx.settings.schedule_incremental = ""
    assert criteria(readiness.assess(rctx, now=datetime.now(UTC) + timedelta(hours=3)))[
        "recent_verified_backup"
    ]["ok"]
    rctx.settings.schedule_incremental = "0 * * * *"

    record_check(rctx, "drill", "failed")
    r = readiness.assess(rctx)
    assert not criteria(r)["restore_drill"]["ok"] and score(r) == 4
    record_check(rctx, "drill", "passed", days=9)  # passed, but too old
    assert not criteria(readiness.assess(rctx))["restore_drill"]["ok"]
    record_check(rctx, "drill", "passed")
    r = readiness.assess(rctx)
    assert criteria(r)["restore_drill"]["ok"] and score(r) == 6
    assert r["last_drill"]["passed"] is True

    record_check(rctx, "consistency", "passed", issues=3)  # issues: not clean
    assert not criteria(readiness.assess(rctx))["consistency_clean"]["ok"]
    record_check(rctx, "consistency", "passed", issues=0)
    assert score(readiness.assess(rctx)) == 7

    r = readiness.assess(rctx)
    assert any("REFSERVER_OFFSITE_TARGET" in x for x in r["recommendations"])
    offsite.push_and_record(rctx, str(tmp_path / "usb"))
    r = readiness.assess(rctx)
    assert criteria(r)["offsite_copy"]["ok"] and score(r) == 9
    # A newer full backup that is not offsite yet takes the point away again.
    full_backup(rctx)
    assert not criteria(readiness.assess(rctx))["offsite_copy"]["ok"]
    offsite.push_and_record(rctx, str(tmp_path / "usb"))

    from refserver.safety.scheduler import start_scheduler

    start_scheduler(rctx)
    r = readiness.assess(rctx)
    assert r["scheduler_running"] is True
    assert r["readiness_score"] == "10/10" and r["readiness_level"] == "excellent"
    assert r["readiness"] == "ready" and r["status"] == "healthy"
    assert r["recommendations"] == []

    # Free space: pretend the next full needs more than the disk has.
    free = shutil.disk_usage(rctx.settings.backups_dir).free
    r = readiness.assess(rctx)
    assert criteria(r)["free_space"]["ok"]
    monkeypatch.setattr(readiness, "_estimate_next_full", lambda settings, fulls: free * 2)
    r = readiness.assess(rctx)
    assert not criteria(r)["free_space"]["ok"] and score(r) == 9
    assert any("refserver backup prune" in x for x in r["recommendations"])


def test_damaged_backup_is_not_counted(rctx: Any) -> None:
    """The score reads the manifests on disk: a backup whose manifest is gone does not count."""
    m = full_backup(rctx)
    assert criteria(readiness.assess(rctx))["full_backup"]["ok"]
    (rctx.settings.backups_dir / "metadata" / f"{m.id}.json").write_text("{}")
    r = readiness.assess(rctx)
    assert not criteria(r)["full_backup"]["ok"] and r["sqlite_backups"] == 0


# --- alerts ---------------------------------------------------------------------------------------


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server API
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(json.loads(body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return None

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    alerts.reset_repeat_memory()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hook", received
    finally:
        server.shutdown()
        server.server_close()
        alerts.reset_repeat_memory()


def test_alerts_reach_a_real_webhook(rctx: Any, webhook: tuple[str, list]) -> None:
    url, received = webhook
    rctx.settings.alert_webhook_url = url
    fired = {a["kind"]: a for a in alerts.evaluate(rctx)}
    assert set(fired) == {"backup_stale", "drill_stale"}  # nothing backed up, never drilled
    assert all(a["delivered"] for a in fired.values())
    assert {r["kind"] for r in received} == {"backup_stale", "drill_stale"}
    assert all(r["text"].startswith("RefServer alert") for r in received)
    # Repeats are suppressed within alert_repeat_hours.
    again = alerts.evaluate(rctx)
    assert all(a["suppressed"] for a in again) and len(received) == 2

    full_backup(rctx)
    record_check(rctx, "drill", "passed")
    alerts.reset_repeat_memory()
    assert alerts.conditions(rctx) == []
    # The newest backup older than twice its (hourly) schedule.
    kinds = {c["kind"] for c in alerts.conditions(rctx, datetime.now(UTC) + timedelta(hours=2.5))}
    assert kinds == {"backup_stale"}
    # A drill that failed; a drill older than 8 days.
    record_check(rctx, "drill", "failed")
    assert {c["kind"] for c in alerts.conditions(rctx)} == {"drill_failed"}
    record_check(rctx, "drill", "passed", days=9)
    with rctx.db.write(bump=False) as s:  # keep only the old passed drill
        for row in s.query(CheckRun).filter(CheckRun.kind == "drill").all():
            if row.started_at.replace(tzinfo=UTC) > datetime.now(UTC) - timedelta(days=1):
                s.delete(row)
    assert {c["kind"] for c in alerts.conditions(rctx)} == {"drill_stale"}
    # A disk nearly full: demand more free space than any disk has.
    rctx.settings.alert_min_free_percent = 100.0
    assert "disk_full" in {c["kind"] for c in alerts.conditions(rctx)}
    rctx.settings.alert_min_free_percent = 10.0


def test_a_failing_scheduled_backup_alerts(rctx: Any, webhook: tuple[str, list]) -> None:
    from refserver.safety.scheduler import execute, recent_runs

    url, received = webhook
    rctx.settings.alert_webhook_url = url
    # The backups folder cannot be written (a file sits where a folder must be).
    backups = rctx.settings.backups_dir
    shutil.rmtree(backups, ignore_errors=True)
    backups.parent.mkdir(parents=True, exist_ok=True)
    backups.write_text("not a folder")
    with pytest.raises(OSError):
        execute(rctx, "backup_incremental")
    assert [r["kind"] for r in received] == ["backup_failed"]
    assert "backup_incremental failed" in received[0]["message"]
    runs = [r for r in recent_runs(rctx.db) if r["job_name"] == "backup_incremental"]
    assert runs[0]["outcome"] == "failed" and runs[0]["error"]
