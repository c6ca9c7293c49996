"""Per-client rate limits for logins and uploads (``limits``, in-memory moving windows).

One ``RateLimits`` per app (``app.state.rate_limits``), so every test app starts
with fresh counters and one server process counts every request it serves.
Several server processes would each count their own share; a shared store
(``limits`` supports Redis) is a one-line change in ``RateLimits.__init__``.

The limits come from settings when the settings define them
(``login_rate_limit``, ``login_rate_limit_per_ip``, ``upload_rate_limit``, in
``limits`` notation such as ``"10/minute"``); until then the defaults below
apply. The PDF sandbox limits live here too, for the same reason.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException, Request
from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from refserver.ingest.sandbox import DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT

# Failed or not, each login attempt counts: 10 a minute per (client, username)
# slows guessing; the per-client limit stops spraying many usernames.
DEFAULT_LOGIN = "10/minute"
DEFAULT_LOGIN_PER_IP = "60/minute"
# Uploads per signed-in user (or per client address): generous for a person
# dropping a folder in the UI, tight enough that a script cannot flood the queue
# (bulk import has its own route and queue).
DEFAULT_UPLOAD = "120/minute"

_lock = threading.Lock()


@dataclass(frozen=True)
class SecurityLimits:
    """The knobs of request throttling and the PDF sandbox."""

    login: str = DEFAULT_LOGIN
    login_per_ip: str = DEFAULT_LOGIN_PER_IP
    upload: str = DEFAULT_UPLOAD
    sandbox_timeout: float = DEFAULT_TIMEOUT
    sandbox_memory_mb: int = DEFAULT_MEMORY_MB

    @classmethod
    def from_settings(cls, settings: Any) -> SecurityLimits:
        """Read the optional settings fields, falling back to the defaults."""
        return cls(
            login=getattr(settings, "login_rate_limit", None) or DEFAULT_LOGIN,
            login_per_ip=getattr(settings, "login_rate_limit_per_ip", None) or DEFAULT_LOGIN_PER_IP,
            upload=getattr(settings, "upload_rate_limit", None) or DEFAULT_UPLOAD,
            sandbox_timeout=float(getattr(settings, "pdf_check_timeout", None) or DEFAULT_TIMEOUT),
            sandbox_memory_mb=int(
                getattr(settings, "pdf_check_memory_mb", None) or DEFAULT_MEMORY_MB
            ),
        )


class RateLimits:
    """Moving-window counters keyed by what is limited and who asks."""

    def __init__(self, config: SecurityLimits) -> None:
        self.config = config
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._items: dict[str, RateLimitItem] = {
            "login": parse(config.login),
            "login_ip": parse(config.login_per_ip),
            "upload": parse(config.upload),
        }

    def hit(self, kind: str, *keys: str, cost: int = 1) -> int | None:
        """Count ``cost`` requests; ``None`` if allowed, else seconds until it would be."""
        item = self._items[kind]
        if self._limiter.hit(item, kind, *keys, cost=cost):
            return None
        stats = self._limiter.get_window_stats(item, kind, *keys)
        return max(1, int(stats.reset_time - time.time()) + 1)

    def check(self, kind: str, *keys: str, cost: int = 1) -> None:
        """Count ``cost`` requests (e.g. files of a batch) or raise 429 with ``Retry-After``."""
        retry = self.hit(kind, *keys, cost=cost)
        if retry is not None:
            what = "login attempts" if kind.startswith("login") else "uploads"
            raise HTTPException(
                429,
                f"too many {what}; try again in {retry} s",
                headers={"Retry-After": str(retry)},
            )

    def reset(self) -> None:
        self._limiter.storage.reset()


def rate_limits(app: Any) -> RateLimits:
    """The app's limiter, created from its settings on first use."""
    found = getattr(app.state, "rate_limits", None)
    if found is None:
        with _lock:
            found = getattr(app.state, "rate_limits", None)
            if found is None:
                settings = getattr(app.state, "settings", None)
                found = RateLimits(SecurityLimits.from_settings(settings))
                app.state.rate_limits = found
    return found


def configure(app: Any, config: SecurityLimits) -> RateLimits:
    """Replace the app's limits (tests, or a deployment wiring its own)."""
    limiter = RateLimits(config)
    app.state.rate_limits = limiter
    return limiter


def request_limits(request: Request) -> RateLimits:
    return rate_limits(request.app)
