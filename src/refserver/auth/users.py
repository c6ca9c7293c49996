"""Accounts: Argon2 password hashes, roles, personal API tokens."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import func, select

from refserver.storage.db import Database
from refserver.storage.models import ApiToken, AuditEntry, User

ROLES = ("reader", "editor", "admin", "superuser")
MAX_FAILED_LOGINS = 5
LOCKOUT = timedelta(minutes=15)
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


class Accounts:
    def __init__(self, db: Database) -> None:
        self.db = db

    def count(self) -> int:
        with self.db.read() as s:
            return s.execute(select(func.count()).select_from(User)).scalar_one()

    def create(self, username: str, password: str, role: str = "reader") -> Principal:
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        if not username or len(username) > 128:
            raise ValueError("username must be 1-128 characters")
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
        now = datetime.now(UTC)
        with self.db.write(bump=False) as s:
            user = s.execute(select(User).where(User.username == username)).scalar_one_or_none()
            if user is None:
                _hasher.hash(password)  # same cost either way: no user enumeration by timing
                raise AuthError("invalid username or password")
            locked = user.locked_until
            if locked is not None and locked.tzinfo is None:
                locked = locked.replace(tzinfo=UTC)
            if locked and locked > now:
                raise AuthError("account locked after repeated failures; try later", locked=True)
            try:
                _hasher.verify(user.password_hash, password)
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                user.failed_logins += 1
                if user.failed_logins >= MAX_FAILED_LOGINS:
                    user.locked_until = now + LOCKOUT
                    user.failed_logins = 0
                raise AuthError("invalid username or password") from None
            if not user.is_active:
                raise AuthError("account disabled")
            user.failed_logins = 0
            user.locked_until = None
            user.last_login = now
            if _hasher.check_needs_rehash(user.password_hash):
                user.password_hash = _hasher.hash(password)
            return Principal(user.id, user.username, user.role)

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
            user.is_active = active
            if not active:
                for tok in s.execute(select(ApiToken).where(ApiToken.user_id == user.id)).scalars():
                    tok.revoked = True

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
            return Principal(user.id, user.username, user.role)

    # --- audit ------------------------------------------------------------------------
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
