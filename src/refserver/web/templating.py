"""The Jinja2 environment shared by every page, with the few filters the pages need."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi.templating import Jinja2Templates

WEB_DIR = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=str(WEB_DIR / "templates"))
STATIC_DIR = WEB_DIR / "static"


def filesize(value: Any) -> str:
    """Bytes as a short human size (binary units, as `du -h` shows them)."""
    try:
        n = float(value or 0)
    except (TypeError, ValueError):
        return "—"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _as_datetime(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, int | float):
        dt = datetime.fromtimestamp(float(value), UTC)
    else:
        try:
            dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def when(value: Any) -> str:
    """A timestamp (datetime, ISO string or epoch) as ``YYYY-MM-DD HH:MM UTC``."""
    dt = _as_datetime(value)
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if dt else "—"


def ago(value: Any) -> str:
    """How long ago, coarse: the dashboard reads better with "3 h ago" than a date."""
    dt = _as_datetime(value)
    if dt is None:
        return "never"
    secs = (datetime.now(UTC) - dt).total_seconds()
    if secs < 0:
        return "in " + _span(-secs)
    return _span(secs) + " ago"


def _span(secs: float) -> str:
    if secs < 90:
        return f"{int(secs)} s"
    if secs < 5400:
        return f"{int(secs // 60)} min"
    if secs < 48 * 3600:
        return f"{secs / 3600:.0f} h"
    return f"{secs / 86400:.0f} d"


def duration(value: Any) -> str:
    try:
        s = float(value or 0)
    except (TypeError, ValueError):
        return "—"
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"


templates.env.filters["filesize"] = filesize
templates.env.filters["when"] = when
templates.env.filters["ago"] = ago
templates.env.filters["duration"] = duration
