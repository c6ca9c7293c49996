"""Accounts: Argon2 password hashes, roles, personal API tokens."""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import func, select

from refserver.storage.db import Database
from refserver.storage.models import ApiToken, AuditEntry, User

ROLES = ("reader", "editor", "admin", "superuser")
MAX_FAILED_LOGINS = 5
LOCKOUT = timedelta(minutes=15)
TOKEN_TOUCH_INTERVAL = timedelta(minutes=5)
USERNAME_RE = re.compile(r"[A-Za-z0-9._@+-]{1,128}")
log = logging.getLogger(__name__)
_hasher = PasswordHasher()


def role_at_least(role: str, needed: str) -> bool:
    return ROLES.index(role) >= ROLES.index(needed)


@dataclass(frozen=True)
class Principal:
    """Who is making a request (a detached copy: safe to pass between threads)."""

    id: int
    username: str
    role: str

    def can(self, needed: str) -> bool:
        return role_at_least(self.role, needed)


class AuthError(Exception):
    def __init__(self, message: str, *, locked: bool = False) -> None:
        super().__init__(message)
        self.locked = locked


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def fingerprint(password_hash: str) -> str:
    """A short digest of a password hash, kept in sessions to notice password changes."""
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]


def _keep_one_superuser(s: Any, leaving_id: int) -> None:
    others = s.execute(
        select(func.count())
        .select_from(User)
        .where(User.role == "superuser", User.is_active.is_(True), User.id != leaving_id)
    ).scalar_one()
    if not others:
        raise ValueError("this is the last active superuser; create another one first")


class Accounts:
    def __init__(self, db: Database) -> None:
        self.db = db

    def count(self) -> int:
        with self.db.read() as s:
            return s.execute(select(func.count()).select_from(User)).scalar_one()

    def create(self, username: str, password: str, role: str = "reader") -> Principal:
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        if not USERNAME_RE.fullmatch(username or ""):
            raise ValueError(
                "username must be 1-128 letters, digits or . _ @ + - (it appears in URLs)"
            )
        if len(password) < 8:
            raise ValueError("password must have at least 8 characters")
        with self.db.write(bump=False) as s:
            if s.execute(select(User).where(User.username == username)).scalar_one_or_none():
                raise ValueError(f"user {username!r} exists")
            user = User(username=username, password_hash=_hasher.hash(password), role=role)
            s.add(user)
            s.flush()
            return Principal(user.id, user.username, user.role)

    def ensure_superuser(self, username: str, password: str | None) -> str | None:
        """On first start create a superuser; returns a generated password to print once."""
        if self.count():
            return None
        generated = None
        if not password:
            generated = password = secrets.token_urlsafe(18)
        self.create(username, password, "superuser")
        return generated

    def authenticate(self, username: str, password: str) -> Principal:
        """Check a password; failures are counted (and committed) towards the lockout.

        The failure is raised *after* the write commits: raising inside
        ``db.write()`` would roll the counter back and the lockout would never
        trigger.
        """
        now = datetime.now(UTC)
        failure: AuthError | None = None
        principal: Principal | None = None
        with self.db.write(bump=False) as s:
            user = s.execute(select(User).where(User.username == username)).scalar_one_or_none()
            if user is None:
                _hasher.hash(password)  # same cost either way: no user enumeration by timing
                failure = AuthError("invalid username or password")
            else:
                locked = user.locked_until
                if locked is not None and locked.tzinfo is None:
                    locked = locked.replace(tzinfo=UTC)
                if locked and locked > now:
                    failure = AuthError(
                        "account locked after repeated failures; try later", locked=True
                    )
                else:
                    try:
                        _hasher.verify(user.password_hash, password)
                    except (VerifyMismatchError, VerificationError, InvalidHashError):
                        user.failed_logins += 1
                        if user.failed_logins >= MAX_FAILED_LOGINS:
                            user.locked_until = now + LOCKOUT
                            user.failed_logins = 0
                        failure = AuthError("invalid username or password")
                    else:
                        if not user.is_active:
                            failure = AuthError("account disabled")
                        else:
                            user.failed_logins = 0
                            user.locked_until = None
                            user.last_login = now
                            if _hasher.check_needs_rehash(user.password_hash):
                                user.password_hash = _hasher.hash(password)
                            principal = Principal(user.id, user.username, user.role)
        if failure is not None:
            raise failure
        assert principal is not None
        return principal

    def get(self, user_id: int) -> Principal | None:
        with self.db.read() as s:
            user = s.get(User, user_id)
            if user is None or not user.is_active:
                return None
            return Principal(user.id, user.username, user.role)

    def set_password(self, username: str, password: str) -> None:
        if len(password) < 8:
            raise ValueError("password must have at least 8 characters")
        with self.db.write(bump=False) as s:
            user = s.execute(select(User).where(User.username == username)).scalar_one_or_none()
            if user is None:
                raise ValueError(f"no user {username!r}")
            user.password_hash = _hasher.hash(password)
            user.failed_logins = 0
            user.locked_until = None

    def set_active(self, username: str, active: bool) -> None:
        with self.db.write(bump=False) as s:
            user = s.execute(select(User).where(User.username == username)).scalar_one_or_none()
            if user is None:
                raise ValueError(f"no user {username!r}")
            if not active and user.role == "superuser" and user.is_active:
                _keep_one_superuser(s, user.id)
            user.is_active = active
            if not active:
                for tok in s.execute(select(ApiToken).where(ApiToken.user_id == user.id)).scalars():
                    tok.revoked = True

    def set_role(self, username: str, role: str) -> None:
        """Change a user's role; the last active superuser cannot be demoted."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        with self.db.write(bump=False) as s:
            user = s.execute(select(User).where(User.username == username)).scalar_one_or_none()
            if user is None:
                raise ValueError(f"no user {username!r}")
            if user.role == "superuser" and role != "superuser" and user.is_active:
                _keep_one_superuser(s, user.id)
            user.role = role

    def change_password(self, principal: Principal, current: str, new: str) -> None:
        """A user changing their own password must prove the current one."""
        self.confirm_password(principal, current)
        self.set_password(principal.username, new)

    def confirm_password(self, principal: Principal, password: str) -> None:
        """Re-authentication for dangerous actions; failures count towards lockout."""
        confirmed = self.authenticate(principal.username, password)
        if confirmed.id != principal.id:
            raise AuthError("invalid username or password")

    def session_user(self, user_id: int) -> tuple[Principal, str] | None:
        """The active user behind a session and the fingerprint of their password hash.

        The fingerprint is stored in the session at login: a password change (or
        reset) changes it, which signs out every other browser session.
        """
        with self.db.read() as s:
            user = s.get(User, user_id)
            if user is None or not user.is_active:
                return None
            return Principal(user.id, user.username, user.role), fingerprint(user.password_hash)

    def get_user(self, username: str) -> User | None:
        with self.db.read() as s:
            return s.execute(select(User).where(User.username == username)).scalar_one_or_none()

    def list(self) -> list[User]:
        with self.db.read() as s:
            return list(s.execute(select(User).order_by(User.username)).scalars())

    # --- tokens ---------------------------------------------------------------------
    def create_token(self, user_id: int, name: str = "") -> tuple[int, str]:
        token = "rs_" + secrets.token_urlsafe(32)
        with self.db.write(bump=False) as s:
            row = ApiToken(
                user_id=user_id, name=name, token_hash=hash_token(token), prefix=token[:8]
            )
            s.add(row)
            s.flush()
            return row.id, token

    def revoke_token(self, user_id: int, token_id: int) -> bool:
        with self.db.write(bump=False) as s:
            row = s.get(ApiToken, token_id)
            if row is None or row.user_id != user_id:
                return False
            row.revoked = True
            return True

    def list_tokens(self, user_id: int) -> list[ApiToken]:
        with self.db.read() as s:
            return list(s.execute(select(ApiToken).where(ApiToken.user_id == user_id)).scalars())

    def principal_for_token(self, token: str) -> Principal | None:
        now = datetime.now(UTC)
        with self.db.read() as s:
            row = s.execute(
                select(ApiToken, User)
                .join(User, User.id == ApiToken.user_id)
                .where(ApiToken.token_hash == hash_token(token))
            ).first()
            if row is None:
                return None
            tok, user = row
            if tok.revoked or not user.is_active:
                return None
            last = tok.last_used
            if last is not None and last.tzinfo is None:
                last = last.replace(tzinfo=UTC)
            token_id = tok.id
            principal = Principal(user.id, user.username, user.role)
        if last is None or now - last > TOKEN_TOUCH_INTERVAL:
            self._touch_token(token_id, now)
        return principal

    def _touch_token(self, token_id: int, now: datetime) -> None:
        """Record when a token was last used (at most every few minutes: one short write)."""
        try:
            with self.db.write(bump=False) as s:
                row = s.get(ApiToken, token_id)
                if row is not None:
                    row.last_used = now
        except Exception:  # writes paused during a restore, a busy database: not worth a 5xx
            log.debug("could not record token use", exc_info=True)

    # --- audit ------------------------------------------------------------------------
    def audit_entries(
        self,
        *,
        limit: int = 50,
        offset: int = 0,
        action: str | None = None,
        username: str | None = None,
    ) -> tuple[list[AuditEntry], int]:
        """Newest first, optionally filtered by action and by user; with the total."""
        query = select(AuditEntry)
        counted = select(func.count()).select_from(AuditEntry)
        if action:
            query = query.where(AuditEntry.action == action)
            counted = counted.where(AuditEntry.action == action)
        if username:
            query = query.where(AuditEntry.username == username)
            counted = counted.where(AuditEntry.username == username)
        with self.db.read() as s:
            total = s.execute(counted).scalar_one()
            rows = list(
                s.execute(
                    query.order_by(AuditEntry.id.desc()).limit(limit).offset(offset)
                ).scalars()
            )
        return rows, total

    def audit(
        self,
        action: str,
        *,
        username: str | None,
        target: str | None = None,
        detail: dict | None = None,
        client: str | None = None,
    ) -> None:
        with self.db.write(bump=False) as s:
            s.add(
                AuditEntry(
                    action=action,
                    username=username,
                    target=target,
                    detail=detail or {},
                    client=client,
                )
            )
