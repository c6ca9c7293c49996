"""Alerts: tell someone when protection is failing, before the disk dies.

Rules (evaluated by the hourly health check, and fired directly by a failing
backup or drill): a backup failed; the newest completed backup is older than
twice its schedule; the newest drill failed or is older than 8 days; the disk is
nearly full. Each alert goes to the log and, when ``alert_webhook_url`` is set,
is POSTed as JSON with httpx. The same alert is repeated at most every
``alert_repeat_hours`` so a broken schedule does not flood the receiver.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from refserver.storage.models import CheckRun

log = logging.getLogger(__name__)

DRILL_MAX_AGE = timedelta(days=8)
_sent: dict[tuple[str, str], float] = {}
_sent_lock = threading.Lock()


def _setting(settings: Any, name: str, default: Any) -> Any:
    value = getattr(settings, name, None)
    return default if value is None else value


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def fire(
    ctx: Any, kind: str, message: str, detail: dict[str, Any] | None = None, *, force: bool = False
) -> dict[str, Any]:
    """Log the alert and send it to the webhook (unless sent recently); returns what was done."""
    settings = ctx.settings
    alert: dict[str, Any] = {
        "kind": kind,
        "message": message,
        "detail": detail or {},
        "data_dir": str(settings.data_dir),
        "at": datetime.now(UTC).isoformat(),
        "source": "refserver",
        "delivered": False,
        "suppressed": False,
    }
    log.warning("ALERT %s: %s", kind, message)
    key = (str(settings.data_dir), kind)
    repeat = float(_setting(settings, "alert_repeat_hours", 6)) * 3600
    with _sent_lock:
        last = _sent.get(key)
        if not force and last is not None and time.time() - last < repeat:
            alert["suppressed"] = True
            return alert
        _sent[key] = time.time()
    url = str(_setting(settings, "alert_webhook_url", "") or "")
    if url:
        import httpx

        payload = {k: alert[k] for k in ("kind", "message", "detail", "data_dir", "at", "source")}
        payload["text"] = f"RefServer alert ({kind}): {message}"  # Slack/Mattermost-compatible
        try:
            r = httpx.post(
                url, json=payload, timeout=float(_setting(settings, "alert_timeout", 10.0))
            )
            alert["delivered"] = r.is_success
            alert["status_code"] = r.status_code
            if not r.is_success:
                log.error("alert webhook answered %s for %s", r.status_code, kind)
        except httpx.HTTPError as exc:
            alert["error"] = str(exc)
            log.error("alert webhook unreachable for %s: %s", kind, exc)
    return alert


def reset_repeat_memory() -> None:
    """Forget when alerts were last sent (a new process starts with none)."""
    with _sent_lock:
        _sent.clear()


def conditions(ctx: Any, now: datetime | None = None) -> list[dict[str, Any]]:
    """The alert conditions that hold now, as checked facts (no sending)."""
    from refserver.safety.scheduler import schedule_interval

    now = now or datetime.now(UTC)
    settings = ctx.settings
    found: list[dict[str, Any]] = []
    from refserver.safety.manifest import list_manifests

    manifests = list_manifests(Path(settings.backups_dir) / "metadata")[0]
    done = [m for m in manifests if m.status == "completed" and m.verified]
    latest_ok = done[-1] if done else None
    with ctx.db.read() as s:
        drill = s.execute(
            select(CheckRun)
            .where(CheckRun.kind == "drill", CheckRun.status != "running")
            .order_by(CheckRun.started_at.desc(), CheckRun.id.desc())
            .limit(1)
        ).scalar_one_or_none()
    finished = [m for m in manifests if m.status not in ("running", "verifying")]
    if finished and finished[-1].status in ("failed", "damaged"):
        bad = finished[-1]
        found.append(
            {
                "kind": "backup_failed",
                "message": f"the latest backup {bad.id} is {bad.status}: {bad.error}",
            }
        )
    intervals = [
        i
        for i in (
            schedule_interval(settings, n, now)
            for n in ("backup_incremental", "backup_full_daily", "backup_full_weekly")
        )
        if i is not None
    ]
    if intervals:
        allowed = 2 * min(intervals)
        if latest_ok is None:
            found.append({"kind": "backup_stale", "message": "no completed backup exists"})
        else:
            age = now - latest_ok.created_at
            if age > allowed:
                found.append(
                    {
                        "kind": "backup_stale",
                        "message": f"the newest backup {latest_ok.id} is {_hours(age)} old, "
                        f"more than twice its schedule ({_hours(allowed)})",
                    }
                )
    if drill is None:
        found.append({"kind": "drill_stale", "message": "no restore drill has run yet"})
    elif drill.status != "passed":
        found.append(
            {
                "kind": "drill_failed",
                "message": f"the last restore drill failed: {(drill.result or {}).get('error')}",
            }
        )
    elif now - _aware(drill.started_at) > DRILL_MAX_AGE:
        found.append(
            {
                "kind": "drill_stale",
                "message": f"the last passed restore drill is {_hours(now - _aware(drill.started_at))} old (limit 8 days)",
            }
        )
    disk = shutil.disk_usage(settings.data_dir)
    min_free = float(_setting(settings, "alert_min_free_percent", 10.0))
    free_pct = 100.0 * disk.free / disk.total if disk.total else 100.0
    if free_pct < min_free:
        found.append(
            {
                "kind": "disk_full",
                "message": f"only {free_pct:.1f}% ({disk.free / 1e9:.1f} GB) free on the data disk "
                f"(alert below {min_free:g}%)",
            }
        )
    return found


def evaluate(ctx: Any, now: datetime | None = None) -> list[dict[str, Any]]:
    """Fire every condition that holds; returns the alerts (delivered or suppressed)."""
    return [fire(ctx, c["kind"], c["message"]) for c in conditions(ctx, now)]


def _hours(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.1f} h"
