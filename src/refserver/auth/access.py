"""THE access table: who may call each route.

Every HTTP route of the app is listed here, keyed by (method, path template).
The routes themselves enforce access with the dependencies in
``refserver.api.deps`` (``ReaderDep``, ``CurrentUser``, ``EditorUser``,
``AdminUser``, ``SuperUser``, ``ReauthDep``); this table is the documentation
of that, and ``tests/security/test_access.py`` proves the two agree: it reads
each route's dependencies and calls each route with no credentials and as each
role. A route missing from the table fails that test, so a new route cannot
ship undocumented. ``docs/security.md`` is generated from this module
(``python -m refserver.auth.access > docs/security.md``; a test compares).

Levels, from open to closed:

- ``public``: anyone, always (health, signing in).
- ``read``: anyone when ``REFSERVER_PUBLIC_READ`` is on, else a signed-in reader.
  Only reading and searching routes may have it; nothing that changes data.
- ``reader``: any signed-in account (your own tokens, your password).
- ``editor``, ``admin``, ``superuser``: that role or a higher one
  (reader < editor < admin < superuser).

``reauth`` marks routes that also need the current password again
(``ReauthDep``: header ``X-Confirm-Password`` or field ``confirm_password``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

LEVELS = ("public", "read", "reader", "editor", "admin", "superuser")
ROLE_LEVELS = ("reader", "editor", "admin", "superuser")


@dataclass(frozen=True)
class Access:
    level: str
    note: str = ""
    reauth: bool = False
    # The handler checks access itself (no dependency shows it): only the calls
    # in the tests can prove the level. Prefer a dependency.
    in_handler: bool = False

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f"unknown access level {self.level!r}")

    def allows(self, role: str | None, *, public_read: bool) -> bool:
        """Whether a caller with ``role`` (``None``: not signed in) may call the route."""
        if self.level == "public":
            return True
        if self.level == "read" and (public_read or role is not None):
            return True
        if role is None:
            return False
        needed = "reader" if self.level == "read" else self.level
        return ROLE_LEVELS.index(role) >= ROLE_LEVELS.index(needed)


def _a(level: str, note: str = "", *, reauth: bool = False, in_handler: bool = False) -> Access:
    return Access(level, note, reauth, in_handler)


# (method, path template) -> Access. Keep grouped by area, as the docs show it.
ACCESS: dict[tuple[str, str], Access] = {
    # --- system -----------------------------------------------------------------------
    ("GET", "/health"): _a("public", "liveness for load balancers and monitors"),
    ("GET", "/status"): _a("public", "which components are up (no library data)"),
    ("GET", "/stats"): _a("read", "library counts"),
    ("GET", "/vector/stats"): _a("read", "vector index counts"),
    # --- signing in -----------------------------------------------------------------------
    ("GET", "/admin/login"): _a("public", "login page (HTML)"),
    ("POST", "/admin/login"): _a(
        "public", "form login (session cookie) or JSON token; rate limited"
    ),
    ("POST", "/api/login"): _a("public", "JSON login → API token; rate limited"),
    ("POST", "/admin/logout"): _a("public", "clears the session (CSRF-checked when signed in)"),
    ("GET", "/api/me"): _a("reader", "who am I"),
    ("POST", "/api/me/password"): _a("reader", "change your own password (needs the current one)"),
    # --- your API tokens -------------------------------------------------------------------
    ("POST", "/api/tokens"): _a("reader", "create a personal API token"),
    ("GET", "/api/tokens"): _a("reader", "list your tokens (never their values)"),
    ("DELETE", "/api/tokens/{token_id}"): _a("reader", "revoke one of your tokens"),
    # --- uploads and jobs ------------------------------------------------------------------
    ("POST", "/upload"): _a("editor", "queued ingest; rate limited, sandboxed PDF checks"),
    ("POST", "/upload-priority"): _a("editor", "queued ingest with a priority"),
    ("POST", "/process"): _a("editor", "synchronous ingest"),
    ("POST", "/upload/batch"): _a("editor", "many files in one request"),
    ("GET", "/batch/{batch_id}"): _a("read", "progress of a batch"),
    ("GET", "/job/{job_id}"): _a("read"),
    ("GET", "/jobs"): _a("read"),
    ("GET", "/queue/status"): _a("read"),
    ("POST", "/queue/cancel/{job_id}"): _a("editor"),
    ("POST", "/job/{job_id}/retry"): _a("editor"),
    # --- papers ----------------------------------------------------------------------------
    ("GET", "/papers"): _a("read"),
    ("GET", "/paper/{doc_id}"): _a("read"),
    ("GET", "/paper/{doc_id}/pages"): _a("read"),
    ("GET", "/metadata/{doc_id}"): _a("read"),
    ("PATCH", "/metadata/{doc_id}"): _a("editor", "edit metadata (history kept)"),
    ("POST", "/metadata/{doc_id}/undo/{edit_id}"): _a("editor"),
    ("GET", "/text/{doc_id}"): _a("read"),
    ("GET", "/embedding/{doc_id}"): _a("read"),
    ("GET", "/embedding/{doc_id}/pages"): _a("read"),
    ("GET", "/embedding/{doc_id}/page/{n}"): _a("read"),
    ("GET", "/layout/{doc_id}"): _a("read"),
    ("GET", "/preview/{doc_id}"): _a("read"),
    ("GET", "/page-image/{doc_id}/{n}"): _a("read"),
    ("GET", "/download/{doc_id}"): _a("read"),
    ("DELETE", "/paper/{doc_id}"): _a("superuser", "delete a paper"),
    # --- search ----------------------------------------------------------------------------
    ("GET", "/search"): _a("read"),
    ("POST", "/search/vector"): _a("read", "read-only despite POST"),
    ("GET", "/search/hybrid"): _a("read"),
    ("POST", "/search/hybrid"): _a("read", "read-only despite POST"),
    ("POST", "/search/batch"): _a("read", "read-only despite POST"),
    ("GET", "/similar/{doc_id}"): _a("read"),
    # --- export ------------------------------------------------------------------------
    ("GET", "/export"): _a("read", "the library's metadata (BibTeX, CSL JSON, ...)"),
    # --- users and audit -------------------------------------------------------------------
    ("GET", "/admin/users"): _a("superuser", "list accounts (JSON)"),
    ("POST", "/admin/users"): _a("superuser", "create an account"),
    ("POST", "/admin/users/{username}/disable"): _a("superuser", "disable + revoke tokens"),
    ("POST", "/admin/users/{username}/enable"): _a("superuser"),
    ("POST", "/admin/users/{username}/role"): _a("superuser"),
    ("POST", "/admin/users/{username}/password"): _a("superuser", "reset a password"),
    ("GET", "/admin/audit"): _a("superuser", "the audit log"),
    # --- backups --------------------------------------------------------------------------
    ("POST", "/admin/backup/trigger"): _a("admin", "start a backup"),
    ("GET", "/admin/backup/status"): _a("admin"),
    ("GET", "/admin/backup/history"): _a("admin"),
    ("GET", "/admin/backup/{backup_id}"): _a("admin", "one backup's record and manifest"),
    ("POST", "/admin/backup/verify/{backup_id}"): _a("admin"),
    ("POST", "/admin/backup/restore/{backup_id}"): _a(
        "superuser",
        "restore a listed backup (password again when over live data)",
        reauth=True,
        in_handler=True,
    ),
    ("POST", "/admin/backup/restore"): _a(
        "superuser",
        "restore, backup_id in the body (password again when over live data)",
        reauth=True,
        in_handler=True,
    ),
    ("DELETE", "/admin/backup/cleanup"): _a("superuser", "apply retention (deletes backups)"),
    ("POST", "/admin/backup/health-check"): _a("admin"),
    # --- consistency ----------------------------------------------------------------------
    ("GET", "/admin/consistency/summary"): _a("admin"),
    ("POST", "/admin/consistency/check"): _a("admin", "run a consistency check"),
    ("GET", "/admin/consistency/check"): _a("admin", "runs a check on GET too (RefServer compat)"),
    ("POST", "/admin/consistency/fix"): _a("superuser", "repair disagreements"),
    ("GET", "/admin/consistency/history"): _a("admin"),
    # --- scheduled protection and disaster recovery -----------------------------------------
    ("GET", "/admin/disaster-recovery/status"): _a("admin", "readiness score"),
    ("POST", "/admin/disaster-recovery/test"): _a("admin", "run a restore drill"),
    ("GET", "/admin/scheduler"): _a("admin", "scheduled jobs and runs"),
    ("GET", "/metrics"): _a(
        "admin",
        "Prometheus metrics; public when `REFSERVER_METRICS_PUBLIC` (checked in the handler)",
        in_handler=True,
    ),
    # --- web UI (HTML pages under /admin; forms are CSRF-checked) ---------------------
    ("GET", "/admin"): _a("public", "redirects to the dashboard or the login page"),
    ("GET", "/admin/"): _a("public", "redirects to the dashboard or the login page"),
    ("GET", "/admin/dashboard"): _a("reader"),
    ("GET", "/admin/papers"): _a("reader"),
    ("GET", "/admin/papers/{doc_id}"): _a("reader"),
    ("GET", "/admin/papers/{doc_id}/viewer"): _a("reader"),
    ("POST", "/admin/papers/{doc_id}/metadata"): _a("editor"),
    ("POST", "/admin/papers/{doc_id}/undo/{edit_id}"): _a("editor"),
    ("POST", "/admin/papers/{doc_id}/delete"): _a("superuser"),
    ("GET", "/admin/upload"): _a("reader", "the page; uploading itself needs an editor"),
    ("GET", "/admin/queue"): _a("reader"),
    ("GET", "/admin/queue/table"): _a("reader", "HTMX fragment"),
    ("POST", "/admin/queue/{job_id}/cancel"): _a("editor"),
    ("POST", "/admin/queue/{job_id}/retry"): _a("editor"),
    ("GET", "/admin/backup"): _a("admin", "backup page (checked in the handler)", in_handler=True),
    ("POST", "/admin/ui/backup/trigger"): _a("admin"),
    ("POST", "/admin/ui/backup/{backup_id}/verify"): _a("admin"),
    ("POST", "/admin/ui/backup/{backup_id}/restore"): _a(
        "superuser", "asks for the password again (checked in the handler)"
    ),
    ("GET", "/admin/consistency"): _a(
        "admin", "consistency page (checked in the handler)", in_handler=True
    ),
    ("POST", "/admin/ui/consistency/check"): _a("admin"),
    ("POST", "/admin/ui/consistency/fix"): _a("superuser"),
    ("GET", "/admin/disaster-recovery"): _a(
        "admin", "readiness page (checked in the handler)", in_handler=True
    ),
    ("POST", "/admin/ui/disaster-recovery/drill"): _a("admin"),
    ("GET", "/admin/account"): _a("reader", "your account page"),
    ("POST", "/admin/account/password"): _a("reader", "change your own password"),
}

# Served outside the API routes (documented here, checked by the tests separately).
OTHER_ROUTES: dict[str, Access] = {
    "/static/*": _a("public", "vendored CSS/JS of the web UI"),
    "/openapi.json": _a("public", "the API schema (no data)"),
    "/docs": _a("public", "Swagger UI"),
    "/docs/oauth2-redirect": _a("public", "Swagger UI helper"),
    "/redoc": _a("public", "ReDoc"),
}


# --- reading the app ------------------------------------------------------------------
@dataclass(frozen=True)
class RouteInfo:
    method: str
    path: str
    in_schema: bool
    declared: str  # the level the route's dependencies enforce
    reauth: bool
    endpoint: str


def _dependency_names(dependant: Any) -> Iterator[str]:
    for sub in getattr(dependant, "dependencies", []) or []:
        yield getattr(sub.call, "__name__", repr(sub.call))
        yield from _dependency_names(sub)


def declared_level(dependency_names: set[str]) -> str:
    """The level a route's dependencies enforce (the strictest one wins)."""
    for role in reversed(ROLE_LEVELS):
        if f"require_{role}" in dependency_names:
            return role
    if "current_user" in dependency_names or "reauthenticated" in dependency_names:
        return "reader"
    if "reader_access" in dependency_names:
        return "read"
    return "public"


def app_routes(app: Any) -> list[RouteInfo]:
    """Every API route of ``app`` (in the schema or not) with its enforced level."""
    from fastapi.routing import APIRoute, iter_route_contexts

    out: list[RouteInfo] = []
    for rc in iter_route_contexts(app.routes):
        if not isinstance(rc.original_route, APIRoute):
            continue
        names = set(_dependency_names(getattr(rc, "dependant", None)))
        for method in sorted(rc.methods or ()):
            out.append(
                RouteInfo(
                    method=method,
                    path=str(rc.path),
                    in_schema=bool(rc.include_in_schema),
                    declared=declared_level(names),
                    reauth="reauthenticated" in names,
                    endpoint=f"{rc.endpoint.__module__}.{rc.endpoint.__name__}",
                )
            )
    return out


def table_problems(routes: list[RouteInfo]) -> list[str]:
    """Disagreements between the app and the table, as sentences (empty when all agree)."""
    problems: list[str] = []
    seen = set()
    for r in routes:
        key = (r.method, r.path)
        seen.add(key)
        entry = ACCESS.get(key)
        if entry is None:
            problems.append(
                f"{r.method} {r.path} ({r.endpoint}) is not in refserver.auth.access.ACCESS; "
                f"its code enforces {r.declared!r}{' + reauth' if r.reauth else ''}: add it."
            )
            continue
        if entry.level != r.declared and not entry.in_handler:
            problems.append(
                f"{r.method} {r.path}: the table says {entry.level!r} but the code enforces "
                f"{r.declared!r} ({r.endpoint})."
            )
        if entry.reauth != r.reauth and not entry.in_handler:
            problems.append(
                f"{r.method} {r.path}: the table says reauth={entry.reauth} but the code "
                f"has reauth={r.reauth}."
            )
        if (
            entry.level == "read"
            and r.method not in ("GET", "HEAD")
            and "read-only" not in entry.note
        ):
            problems.append(
                f"{r.method} {r.path} is open to anonymous readers but changes state? "
                "Only read-only routes may be 'read' (say 'read-only' in the note)."
            )
    for key in ACCESS:
        if key not in seen:
            problems.append(f"{key[0]} {key[1]} is in the table but not served by the app.")
    return problems


# --- the document ---------------------------------------------------------------------
_WHO = {
    "public": "anyone",
    "read": "anyone if `PUBLIC_READ`, else reader",
    "reader": "signed in (any role)",
    "editor": "editor+",
    "admin": "admin+",
    "superuser": "superuser",
}

INTRO = """# Security

Generated from `src/refserver/auth/access.py` by
`python -m refserver.auth.access > docs/security.md`; a test keeps it current.

## Accounts, sessions and tokens

- Roles: **reader** (search and read) < **editor** (upload, edit metadata) <
  **admin** (backups, checks) < **superuser** (restore, delete, users). Each role
  may do everything the roles below it may.
- Passwords are hashed with Argon2id (`argon2-cffi`); API tokens (`rs_…`) are
  stored as SHA-256 hashes and shown once. First start: a superuser from
  `REFSERVER_ADMIN_USER`/`REFSERVER_ADMIN_PASSWORD`, or a generated password
  printed once. `refserver user create|passwd|list|disable` manage accounts.
- Browsers: `POST /admin/login` sets the `refserver_session` cookie (signed,
  HttpOnly, SameSite=Lax). It holds the user id and a fingerprint of the
  password hash: changing a password signs out every other session. Every
  state-changing request made with the cookie must carry the session's CSRF
  token (form field `csrf_token` or header `X-CSRF-Token`), else 403.
- API clients: `Authorization: Bearer <token>` (from `POST /api/login`, or
  `POST /admin/login` with `Accept: application/json`, or `POST /api/tokens`).
  Tokens are revoked with `DELETE /api/tokens/{id}`; disabling a user revokes
  all of theirs. Bearer requests need no CSRF token (no ambient credentials).
- Login: 10 attempts a minute per client and username and 60 per client (429
  with `Retry-After`); 5 wrong passwords lock the account for 15 minutes (429).
- Dangerous actions take the current password again (`ReauthDep`): header
  `X-Confirm-Password` or field `confirm_password` (missing → 428, wrong → 403
  and counted as a failed login). The table marks the routes that use it
  ("+ password again"); the web UI's restore form asks for it too.
- Refuses to start with `REFSERVER_ENVIRONMENT=production` and the default
  `REFSERVER_SECRET_KEY`.

## Uploads

- Size limit (`REFSERVER_MAX_UPLOAD_MB`, 413) and page limit
  (`REFSERVER_MAX_PAGES`); 120 uploads a minute per user (429).
- The client's filename is only a label: files are staged under random names
  and stored under their SHA-256.
- Every upload is checked in a child process (`refserver.ingest.sandbox`) with
  an address-space cap (1 GiB) and a time limit (60 s): `%PDF-` signature,
  complete file (`%%EOF`), not encrypted, at least one page, every page's
  content decodable within 256 MiB (decompression bombs), object nesting,
  images at most 250 megapixels, no JavaScript or launch actions. A rejection
  is a 400 with the reason and an `upload_rejected` audit entry.

## Restores and archives

- Restores are by listed backup id only, into the data folder's restore area.
- `refserver.safety.archive_guard` validates archive members (tar, zip) and
  folder trees before anything is extracted: regular files (and folders) only;
  no symlinks, hard links or devices; no absolute, `..` or backslash paths; only
  expected names; caps on member count, member size, total size and
  compression ratio; no duplicate names.

## Audit log

Logins (and failures, throttling), logouts, uploads (and rejections), metadata
edits, deletes, token and user changes, password confirmations that failed, and
the backup, restore and fix actions of their areas are written to the audit
log: `GET /admin/audit?limit=&offset=&action=&username=` (superuser).

## Responses

HTML responses carry `Content-Security-Policy`, `X-Frame-Options: DENY`,
`X-Content-Type-Options: nosniff` and `Referrer-Policy`. Unexpected errors
answer `500 {"detail": "internal server error"}`; the traceback goes to the log
only.

## Who may call what
"""


def access_markdown() -> str:
    """``docs/security.md``: the prose above plus the table, grouped as in ``ACCESS``."""
    lines = [INTRO.rstrip("\n"), ""]
    lines.append(
        "`read` routes are public when `REFSERVER_PUBLIC_READ=true` (the default); "
        "set it to `false` to require a reader for them. Nothing that changes data is "
        "ever public."
    )
    lines += ["", "| method | path | who | note |", "| --- | --- | --- | --- |"]
    for (method, path), entry in ACCESS.items():
        who = _WHO[entry.level] + (" + password again" if entry.reauth else "")
        lines.append(f"| {method} | `{path}` | {who} | {entry.note} |")
    lines += ["", "Outside the API routes:", "", "| path | who | note |", "| --- | --- | --- |"]
    for path, entry in OTHER_ROUTES.items():
        lines.append(f"| `{path}` | {_WHO[entry.level]} | {entry.note} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(access_markdown())
